//! Agencies for tests: registered straight in storage (in-process suites),
//! or found in the output of `stele agency add` (process suites). Either
//! way the token is the bearer token the server accepts.

use stele::engine::agency::new_token;
use stele::names::AgencyName;
use stele::storage::{Agencies, AgencyRecord};

/// Registers agency `name`, allowed the record-type `types` (empty: all),
/// in `storage`; returns its bearer token.
pub async fn register_agency(
    storage: &dyn Agencies,
    name: &str,
    types: &[&str],
) -> anyhow::Result<String> {
    register_agency_as(storage, name, types, false).await
}

/// [`register_agency`], as a registry admin if `registry_admin`.
pub async fn register_agency_as(
    storage: &dyn Agencies,
    name: &str,
    types: &[&str],
    registry_admin: bool,
) -> anyhow::Result<String> {
    register(storage, name, types, registry_admin, false).await
}

/// Registers agency `name` as an eraser (it may erase any private
/// record's content); returns its bearer token.
pub async fn register_eraser(storage: &dyn Agencies, name: &str) -> anyhow::Result<String> {
    register(storage, name, &[], false, true).await
}

async fn register(
    storage: &dyn Agencies,
    name: &str,
    types: &[&str],
    registry_admin: bool,
    eraser: bool,
) -> anyhow::Result<String> {
    let (token, token_hash) = new_token(&AgencyName::parse(name)?);
    storage
        .add_agency(&AgencyRecord {
            name: name.to_string(),
            token_hash,
            types: types.iter().map(|t| t.to_string()).collect(),
            revoked: false,
            registry_admin,
            eraser,
            created_ms: chrono::Utc::now().timestamp_millis(),
        })
        .await?;
    Ok(token)
}

/// Finds the bearer token for `agency` in the output of `stele agency add`
/// (or of a first start's banner): the first word of the form
/// `<agency>.<base64url secret>`.
pub fn parse_token(output: &str, agency: &str) -> Option<String> {
    output
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '`')
        .find_map(|word| {
            let secret = word.strip_prefix(agency)?.strip_prefix('.')?;
            let valid = secret.len() >= 32
                && secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            valid.then(|| word.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_in_varied_output() {
        let secret = "A".repeat(43);
        let token = format!("land-registry.{secret}");
        for out in [
            format!("{token}\n"),
            format!("agency land-registry created\ntoken: {token}\n(shown once)\n"),
            format!("{{\"agency\":\"land-registry\",\"token\":\"{token}\"}}"),
        ] {
            assert_eq!(
                parse_token(&out, "land-registry").as_deref(),
                Some(token.as_str()),
                "{out}"
            );
        }
        assert_eq!(parse_token("land-registry.short\n", "land-registry"), None);
        assert_eq!(
            parse_token(&format!("other.{secret}"), "land-registry"),
            None
        );
    }
}
