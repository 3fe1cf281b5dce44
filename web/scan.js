// Reading QR codes: from the camera (getUserMedia, frames drawn to a canvas
// and decoded) or from an image file, with the vendored decoder of the `qr`
// package. Nothing leaves the browser.

import { decodeQR } from './vendor/qr/decode.js';

/** Largest side, in pixels, of the frames handed to the decoder. */
const MAX_SIDE = 1280;

function pixels(source, width, height) {
  const scale = Math.min(1, MAX_SIDE / Math.max(width, height));
  const w = Math.max(1, Math.round(width * scale));
  const h = Math.max(1, Math.round(height * scale));
  const canvas = document.createElement('canvas');
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, w, h);
  return ctx.getImageData(0, 0, w, h);
}

/** The text of the QR code in an RGBA image `{ width, height, data }`, or null. */
export function decodeImage(img) {
  try {
    return decodeQR({ width: img.width, height: img.height, data: img.data });
  } catch {
    return null;
  }
}

/** The text of the QR code in an image file (PNG, JPEG, ...), or null. */
export async function decodeFile(file) {
  const bitmap = await createImageBitmap(file);
  try {
    return decodeImage(pixels(bitmap, bitmap.width, bitmap.height));
  } finally {
    bitmap.close();
  }
}

/** Whether this browser can use a camera here (a secure context with getUserMedia). */
export function cameraAvailable() {
  return Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

/**
 * The camera, shown in `video`, read until a QR code is found. `onText` gets
 * the code's text once; then the camera is stopped.
 */
export class Camera {
  constructor(video) {
    this.video = video;
    this.stream = null;
    this.timer = null;
  }

  async start(onText) {
    this.stop();
    this.stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: { ideal: 'environment' }, width: { ideal: 1280 }, height: { ideal: 720 } },
      audio: false,
    });
    const video = this.video;
    video.muted = true;
    video.playsInline = true;
    video.srcObject = this.stream;
    await video.play();
    const tick = () => {
      if (!this.stream) return;
      if (video.readyState >= 2 && video.videoWidth > 0) {
        const text = decodeImage(pixels(video, video.videoWidth, video.videoHeight));
        if (text) {
          this.stop();
          onText(text);
          return;
        }
      }
      this.timer = setTimeout(tick, 150);
    };
    tick();
  }

  stop() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.video.srcObject = null;
  }

  get running() {
    return this.stream !== null;
  }
}
