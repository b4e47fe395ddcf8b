//! The admin API's token, read once at start from `--admin-token-file` or `PAYSTATE_ADMIN_TOKEN`: `serve`
//! and `project` guard their admin listener with it; `verify`, `diff` and `replay` send it when they read a
//! running process's admin API.

use anyhow::{bail, Context, Result};
use paystate_ingress::AdminAuth;
use std::net::SocketAddr;
use std::path::Path;

/// The environment variable holding the token when no `--admin-token-file` is given.
pub const TOKEN_ENV: &str = "PAYSTATE_ADMIN_TOKEN";

/// Shorter tokens are refused: the admin API serves raw webhook bodies and customers' metadata.
const MIN_LEN: usize = 16;

/// The admin token (never printed: `Debug` shows only that there is one).
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// The token of `file` (surrounding whitespace, such as a final newline, removed), else of
    /// `PAYSTATE_ADMIN_TOKEN`; `None` when neither is given.
    pub fn load(file: Option<&Path>) -> Result<Option<AdminToken>> {
        let (raw, from) = match file {
            Some(f) => (
                std::fs::read_to_string(f).with_context(|| format!("reading the admin token file {}", f.display()))?,
                format!("the admin token file {}", f.display()),
            ),
            None => match std::env::var(TOKEN_ENV) {
                Ok(v) => (v, TOKEN_ENV.to_string()),
                Err(std::env::VarError::NotPresent) => return Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => bail!("{TOKEN_ENV} is not UTF-8"),
            },
        };
        Self::parse(&raw).with_context(|| format!("the admin token of {from}"))
    }

    fn parse(raw: &str) -> Result<Option<AdminToken>> {
        let token = raw.trim();
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("it contains whitespace or control characters: give one line, e.g. `openssl rand -hex 32`");
        }
        if token.len() < MIN_LEN {
            bail!("it is {} characters long; use at least {MIN_LEN}, e.g. `openssl rand -hex 32` (64)", token.len());
        }
        Ok(Some(AdminToken(token.to_string())))
    }

    /// The guard of an admin listener on `listen`. Without a token, only a loopback address is allowed:
    /// anything else would serve the log and customers' data to whoever reaches it.
    pub fn auth(token: Option<&AdminToken>, listen: SocketAddr, guard_metrics: bool) -> Result<AdminAuth> {
        match token {
            Some(t) => Ok(AdminAuth::token(&t.0, guard_metrics)),
            None if !listen.ip().is_loopback() => bail!(
                "refusing to serve the admin API on {listen} without a token: it serves raw webhook bodies, \
                 customers' metadata and the log. Give --admin-token-file FILE (or {TOKEN_ENV}), or listen on \
                 127.0.0.1"
            ),
            None if guard_metrics => bail!("--metrics-behind-token needs a token (--admin-token-file or {TOKEN_ENV})"),
            None => Ok(AdminAuth::open()),
        }
    }
}

/// An HTTP client for a running process's admin API, sending `token` when there is one.
pub fn client(token: Option<&AdminToken>, builder: reqwest::ClientBuilder) -> Result<reqwest::Client> {
    use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", t.0)).context("the admin token")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(builder.default_headers(headers).build()?)
}

/// `resp` unless it is a refusal: a 401 says the token is missing or wrong, another 4xx or 5xx is an error
/// naming the URL and status.
pub fn checked(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        bail!(
            "{} answered 401: the admin API needs its token (--admin-token-file FILE or {TOKEN_ENV}), or the one \
             given is not the one it was started with",
            resp.url()
        );
    }
    if status.is_client_error() || status.is_server_error() {
        bail!("{} answered {status}", resp.url());
    }
    Ok(resp)
}

/// A blocking reader of a running process's admin API, for the commands that read either a data directory
/// or an admin URL (`show`, `export`, `digest`, `diff`).
pub struct Remote {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Remote {
    /// A reader of the admin API at `base` (`http://host:port`), sending `token` when there is one.
    pub fn new(base: &str, token: Option<&AdminToken>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = client(token, reqwest::Client::builder().timeout(std::time::Duration::from_secs(300)))?;
        Ok(Remote { runtime, client, base: base.trim_end_matches('/').to_owned() })
    }

    /// The JSON answer to `GET {base}{path}?{query}`; `Ok(Err(message))` for a 404 (its message).
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Result<serde_json::Value, String>> {
        let url = format!("{}{path}", self.base);
        self.runtime
            .block_on(async {
                let resp = self.client.get(&url).query(query).send().await?;
                if resp.status() == reqwest::StatusCode::NOT_FOUND {
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    let message = body["message"].as_str().unwrap_or("not found").to_owned();
                    return anyhow::Ok(Err(message));
                }
                Ok(Ok(checked(resp)?.json::<serde_json::Value>().await?))
            })
            .with_context(|| format!("reading {url}"))
    }

    /// Every payment's summary, in key order, paged through `GET /v1/payments` as the iteration goes.
    pub fn payments(&self) -> impl Iterator<Item = Result<serde_json::Value>> + '_ {
        let mut page: std::vec::IntoIter<serde_json::Value> = Vec::new().into_iter();
        // The cursor of the next page; `None` once the last page was read (or failed).
        let mut after: Option<Option<String>> = Some(None);
        std::iter::from_fn(move || loop {
            if let Some(p) = page.next() {
                return Some(Ok(p));
            }
            let cursor = after.take()?;
            match self.page(cursor.as_deref()) {
                Ok((list, next)) => {
                    page = list.into_iter();
                    after = next.map(Some);
                }
                Err(e) => return Some(Err(e)),
            }
        })
    }

    /// One page of `GET /v1/payments` after `after`, and the cursor of the next one if there is one.
    fn page(&self, after: Option<&str>) -> Result<(Vec<serde_json::Value>, Option<String>)> {
        let mut query = vec![("limit", "1000")];
        query.extend(after.map(|a| ("after", a)));
        let mut answer =
            self.get("/v1/payments", &query)?.map_err(|why| anyhow::anyhow!("{}/v1/payments: {why}", self.base))?;
        let next = answer["next"].as_str().map(str::to_owned);
        match answer["payments"].take() {
            serde_json::Value::Array(list) => Ok((list, next)),
            _ => bail!("{}/v1/payments: no payments in the answer", self.base),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_one_line_of_at_least_sixteen_characters() {
        let ok = AdminToken::parse("0123456789abcdef\n").expect("16 characters and a newline");
        assert_eq!(ok.map(|t| t.0).as_deref(), Some("0123456789abcdef"));
        let short = AdminToken::parse("0123456789abcde").expect_err("15 characters");
        assert!(short.to_string().contains("15 characters long"), "{short}");
        let spaced = AdminToken::parse("0123456789 abcdef").expect_err("a space inside");
        assert!(spaced.to_string().contains("whitespace"), "{spaced}");
        assert!(AdminToken::parse("  \n").is_err(), "empty");
    }

    #[test]
    fn a_public_admin_listener_needs_a_token() {
        let public: SocketAddr = "0.0.0.0:9090".parse().expect("address");
        let loopback: SocketAddr = "127.0.0.1:9090".parse().expect("address");
        let v6_loopback: SocketAddr = "[::1]:9090".parse().expect("address");
        let refused = AdminToken::auth(None, public, false).expect_err("public without a token");
        assert!(refused.to_string().contains("refusing to serve the admin API on 0.0.0.0:9090"), "{refused}");
        assert!(!AdminToken::auth(None, loopback, false).expect("loopback").is_guarded());
        assert!(!AdminToken::auth(None, v6_loopback, false).expect("loopback").is_guarded());
        assert!(AdminToken::auth(None, loopback, true).is_err(), "metrics behind a token that is not there");
        let token = AdminToken("0123456789abcdef".into());
        assert!(AdminToken::auth(Some(&token), public, false).expect("public with a token").is_guarded());
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }
}
