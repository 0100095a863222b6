//! The admin's side of admission (`omctl nodes`, `omctl admit`, `omctl
//! reject`), relayed to the boot server this agent checks in with: the
//! request is signed with the cluster key (`contracts::admit::admin_tag`),
//! which `omctl` does not hold, so only root on a member may decide.

use std::time::{SystemTime, UNIX_EPOCH};

use contracts::admit::{admin_tag, Decision, Verdict, ADMISSION_PATH, AUTH_HEADER, TIME_HEADER};
use contracts::http::CHECKIN_PATH;
use contracts::key::ClusterKey;
use tracing::info;

use super::control_server::Controller;
use crate::exec::{EXIT_CANNOT_RUN, EXIT_NO_AGENT, EXIT_NO_PERMISSION};

/// The boot server an agent relays admission requests to.
#[derive(Clone)]
pub(crate) struct BootServer {
    /// `http://HEAD:PORT`, from the check-in URL.
    pub(crate) base: String,
    /// The cluster key, to sign with.
    pub(crate) key: ClusterKey,
    /// The cluster id, bound into the signature.
    pub(crate) cluster: String,
}

impl BootServer {
    /// The boot server behind a check-in URL (`http://HEAD:PORT/api/v1/checkin`).
    pub(crate) fn from_checkin(url: &str, key: ClusterKey, cluster: String) -> Option<Self> {
        let base = url.strip_suffix(CHECKIN_PATH)?.to_string();
        Some(Self { base, key, cluster })
    }
}

impl Controller {
    /// Lists (`verdict` None) or decides, for the caller `uid`: `omboot`'s
    /// JSON answer, or (exit status, why).
    pub(super) async fn admission(
        &self,
        verdict: Option<(String, Verdict)>,
        uid: u32,
    ) -> Result<String, (i32, String)> {
        if uid != 0 {
            return Err((
                EXIT_NO_PERMISSION,
                "admission takes root (the request is signed with the cluster key)".into(),
            ));
        }
        let Some(server) = &self.boot_server else {
            return Err((
                EXIT_CANNOT_RUN,
                "this agent knows no boot server (it runs without --checkin); run omctl on the head or on a netbooted node".into(),
            ));
        };
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
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let tag = admin_tag(
            &server.key,
            &server.cluster,
            method,
            ADMISSION_PATH,
            now,
            &body,
        );
        let headers = [(TIME_HEADER, now.to_string()), (AUTH_HEADER, tag)];
        let url = format!("{}{ADMISSION_PATH}", server.base);
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
        if let Some((machine, verdict)) = verdict {
            info!(%machine, ?verdict, "admission decided");
        }
        Ok(text)
    }
}
