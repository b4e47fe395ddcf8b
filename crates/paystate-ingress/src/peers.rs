//! A payment query answered by the member that owns the payment (Kafka): each projector folds only the
//! partitions the consumer group gave it, so a member asked for a payment it does not hold asks the
//! others, the owner of the payment's partition first, through their admin APIs (each member's admin URL
//! rides in its `client.id`, which the group's description carries: `paystate_store::GroupView`). A user
//! needs one member's address, not a map of partitions. A forwarded request is marked and never forwarded
//! again; a member answering one does not serve a copy of a payment whose partition another member owns
//! now (a copy kept from before a rebalance may be stale).

use crate::{error, Admin};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use paystate_core::partition_of;
use paystate_store::{GroupMember, GroupView};
use std::sync::OnceLock;
use std::time::Duration;

/// Set on a request one member forwards to another (its value: the forwarding member's client id).
pub const FORWARDED_BY: &str = "paystate-forwarded-by";
/// On a payment's answer in a consumer group: the client id of the member that answered.
pub const ANSWERED_BY: &str = "paystate-answered-by";
/// How long a member waits for another's answer.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// What this member's own store said of the payment a route names.
pub(crate) enum Local {
    /// Found, under this key; the answer.
    Found(String, Response),
    /// Not here; why (the 404's message).
    Missing(String),
}

fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(FORWARD_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(String::clone)
}

/// `response` naming who answered it.
fn answered_by(mut response: Response, member: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(member) {
        response.headers_mut().insert(ANSWERED_BY, v);
    }
    response
}

/// The answer to a payment route (`uri`, asked with `headers`) for `id` (of `account`), given what this
/// member holds: its own answer outside a consumer group; in one, the owner's.
pub(crate) async fn answer(
    a: &Admin,
    headers: &HeaderMap,
    uri: &Uri,
    id: &str,
    account: Option<&str>,
    local: Local,
) -> Response {
    let Some(view) = a.log.group() else { return local.into_response() };
    let partitions = a.log.partitions();
    let forwarded = headers.contains_key(FORWARDED_BY);
    match local {
        Local::Found(key, response) => match view.other_owner(partition_of(key.as_bytes(), partitions)) {
            None => answered_by(response, &view.me),
            Some(owner) if forwarded => answered_by(
                error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("{key} belongs to a partition {} owns now", owner.client_id),
                ),
                &view.me,
            ),
            Some(owner) => match ask(owner, headers, uri, &view.me).await {
                Ok(response) => response,
                Err(why) => unreachable(&view, &[why]),
            },
        },
        Local::Missing(why) if forwarded => answered_by(error(StatusCode::NOT_FOUND, "not_found", why), &view.me),
        Local::Missing(why) => {
            // The payment's key when the id is a PaymentIntent's (or a charge's without one): its owner is
            // asked first; any other id (a refund's, an event's, …) may be anyone's.
            let guess = account.map_or_else(|| id.to_owned(), |acct| format!("{acct}/{id}"));
            let first = view.other_owner(partition_of(guess.as_bytes(), partitions));
            let rest = view.peers().filter(|m| first.is_none_or(|f| f.client_id != m.client_id));
            let mut failed = Vec::new();
            let mut asked = 0;
            for peer in first.into_iter().chain(rest) {
                asked += 1;
                match ask(peer, headers, uri, &view.me).await {
                    Ok(r) if r.status() == StatusCode::NOT_FOUND => {}
                    Ok(r) => return r,
                    Err(e) => failed.push(e),
                }
            }
            if failed.is_empty() {
                let why = format!("{why}, here or on the {asked} other member(s) of group {}", view.group);
                answered_by(error(StatusCode::NOT_FOUND, "not_found", why), &view.me)
            } else {
                unreachable(&view, &failed)
            }
        }
    }
}

impl IntoResponse for Local {
    fn into_response(self) -> Response {
        match self {
            Local::Found(_, r) => r,
            Local::Missing(why) => error(StatusCode::NOT_FOUND, "not_found", why),
        }
    }
}

fn unreachable(view: &GroupView, failed: &[String]) -> Response {
    let why = format!("the member that holds this payment may be one that did not answer: {}", failed.join("; "));
    answered_by(error(StatusCode::BAD_GATEWAY, "member_unreachable", why), &view.me)
}

/// The same request asked of `peer`: its answer, or why there is none.
async fn ask(peer: &GroupMember, headers: &HeaderMap, uri: &Uri, me: &str) -> Result<Response, String> {
    let Some(base) = peer.admin_url.as_deref() else { return Err(format!("{} gives no admin URL", peer.client_id)) };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let failed = |e: &dyn std::fmt::Display| format!("{} at {base}: {e}", peer.client_id);
    let mut request = client().map_err(|e| failed(&e))?.get(&url).header(FORWARDED_BY, me);
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, auth.as_bytes());
    }
    let response = request.send().await.map_err(|e| failed(&e))?;
    let status = StatusCode::from_u16(response.status().as_u16()).map_err(|e| failed(&e))?;
    if status.is_server_error() || status == StatusCode::UNAUTHORIZED {
        return Err(failed(&format!("answered {status}")));
    }
    let content_type = response.headers().get(reqwest::header::CONTENT_TYPE).map(|v| v.as_bytes().to_vec());
    let body = response.bytes().await.map_err(|e| failed(&e))?;
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    if let Some(v) = content_type.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
        out.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(answered_by(out, &peer.client_id))
}
