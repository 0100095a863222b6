//! The admin's side of admission (`omctl nodes`, `omctl admit`, `omctl
//! reject`, `omctl token create`), relayed to the boot server this agent
//! checks in with: the request is signed with the cluster key
//! (`contracts::admit::admin_tag`), which `omctl` does not hold, so only
//! root on a member may decide. A join token's secret is derived here from
//! the key; only its id goes to the boot server.

use crate::keys::Keys;
use contracts::admit::{
    admin_tag, Decision, Token, TokenInfo, TokenRequest, Verdict, ADMISSION_PATH, AUTH_HEADER,
    TIME_HEADER, TOKENS_PATH,
};
use contracts::http::CHECKIN_PATH;
use tracing::info;

use agent_control::ControlReply;

use crate::exec::{EXIT_CANNOT_RUN, EXIT_NO_AGENT, EXIT_NO_PERMISSION};

/// The boot server an agent relays admission requests to.
#[derive(Clone)]
pub(crate) struct BootServer {
    /// `http://HEAD:PORT`, from the check-in URL.
    pub(crate) base: String,
    /// The cluster keys, to sign with (and the cluster id, bound into the
    /// signature).
    pub(crate) keys: Keys,
}

impl BootServer {
    /// The boot server behind a check-in URL (`http://HEAD:PORT/api/v1/checkin`).
    pub(crate) fn from_checkin(url: &str, keys: Keys) -> Option<Self> {
        let base = url.strip_suffix(CHECKIN_PATH)?.to_string();
        Some(Self { base, keys })
    }
}

/// The boot server, for root only: what the agent relays admission
/// requests to, if it knows one.
pub(crate) fn for_caller(
    server: Option<&BootServer>,
    uid: u32,
) -> Result<&BootServer, (i32, String)> {
    if uid != 0 {
        return Err((
            EXIT_NO_PERMISSION,
            "admission takes root (the request is signed with the cluster key)".into(),
        ));
    }
    server.ok_or_else(|| {
            (
                EXIT_CANNOT_RUN,
                "this agent knows no boot server (it runs without --checkin); run omctl on the head or on a netbooted node".into(),
            )
        })
}

impl BootServer {
    /// Makes a join token valid `ttl_s` for `uses` machines and registers
    /// its id with the boot server.
    pub(super) async fn token(&self, ttl_s: u64, uses: u32) -> Result<ControlReply, (i32, String)> {
        let server = self;
        let token = Token::create(&server.keys.newest(), server.keys.cluster());
        let req = TokenRequest {
            id: token.id_hex(),
            ttl_s,
            uses,
        };
        let body = serde_json::to_vec(&req).expect("a token request serialises");
        let answer = signed(server, "POST", TOKENS_PATH, body).await?;
        let info: TokenInfo = serde_json::from_str(&answer).map_err(|e| {
            (
                EXIT_NO_AGENT,
                format!("the boot server's answer is malformed: {e}"),
            )
        })?;
        info!(token = %info.id, expires = info.expires, uses = info.uses_left, "join token made");
        Ok(ControlReply::TokenMade {
            token: token.to_string(),
            head: server.base.clone(),
            expires: info.expires,
            uses: info.uses_left,
        })
    }

    /// Lists (`verdict` None) or decides, for the caller `uid`: `omboot`'s
    /// JSON answer, or (exit status, why).
    pub(super) async fn admission(
        &self,
        verdict: Option<(String, Verdict)>,
    ) -> Result<String, (i32, String)> {
        let server = self;
        let (method, body) = match &verdict {
            None => ("GET", Vec::new()),
            Some((machine, verdict)) => {
                let d = Decision {
                    machine: machine.clone(),
                    verdict: *verdict,
                };
                (
                    "POST",
                    serde_json::to_vec(&d).expect("a decision serialises"),
                )
            }
        };
        let text = signed(server, method, ADMISSION_PATH, body).await?;
        if let Some((machine, verdict)) = verdict {
            info!(%machine, ?verdict, "admission decided");
        }
        Ok(text)
    }
}

/// One admin request to the boot server, signed with the cluster key; the
/// answer's body when it is a 200.
pub(super) async fn signed(
    server: &BootServer,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<String, (i32, String)> {
    let now = contracts::clock::unix_seconds();
    let key = server.keys.sealing();
    let tag = admin_tag(&key, server.keys.cluster(), method, path, now, &body);
    let headers = [(TIME_HEADER, now.to_string()), (AUTH_HEADER, tag)];
    let url = format!("{}{path}", server.base);
    let (status, answer) = crate::checkin::exchange(&url, method, &headers, &body)
        .await
        .map_err(|e| (EXIT_NO_AGENT, e.to_string()))?;
    let text = String::from_utf8_lossy(&answer).trim().to_string();
    if status != 200 {
        return Err((
            1,
            format!(
                "the boot server at {} answered {status}: {text}",
                server.base
            ),
        ));
    }
    Ok(text)
}
