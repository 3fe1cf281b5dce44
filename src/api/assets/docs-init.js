// Starts Swagger UI on the document this server generates. Everything is
// served by the binary itself; nothing is loaded from the network.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
  });
});
