//! `cocoon version` and `cocoon info`: who answers, and how it is.

use super::error::{Error, RpcResult};
use super::output::Table;
use crate::cri_client::CriClient;
use k8s_cri::v1::{StatusRequest, StatusResponse, VersionRequest};
use std::io::Write;

/// The CRI version this client speaks.
pub const CRI_VERSION: &str = "v1";

pub fn client_version(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "Client version:      {}", env!("CARGO_PKG_VERSION"))
}

/// Prints the daemon's side of `cocoon version`.
pub async fn version(client: &mut CriClient, out: &mut impl Write) -> Result<(), Error> {
    let v = client
        .runtime
        .version(VersionRequest {
            version: CRI_VERSION.into(),
        })
        .await
        .rpc("version")?;
    writeln!(out, "Runtime name:        {}", v.runtime_name)?;
    writeln!(out, "Runtime version:     {}", v.runtime_version)?;
    writeln!(out, "Runtime API version: {}", v.runtime_api_version)?;
    Ok(())
}

/// Prints the daemon's conditions and runtime handlers.
pub async fn info(client: &mut CriClient, out: &mut impl Write) -> Result<(), Error> {
    let status = client
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .rpc("status")?;
    write_status(&status, out)?;
    Ok(())
}

pub fn write_status(status: &StatusResponse, out: &mut impl Write) -> std::io::Result<()> {
    let mut conditions = Table::new(&["CONDITION", "STATUS", "REASON", "MESSAGE"]);
    for c in status.status.iter().flat_map(|s| &s.conditions) {
        conditions.row(vec![
            c.r#type.clone(),
            c.status.to_string(),
            c.reason.clone(),
            c.message.clone(),
        ]);
    }
    conditions.write(out)?;
    if !status.runtime_handlers.is_empty() {
        writeln!(out)?;
        let mut handlers = Table::new(&["RUNTIME HANDLER", "FEATURES"]);
        for h in &status.runtime_handlers {
            let mut features = Vec::new();
            if let Some(f) = &h.features {
                if f.recursive_read_only_mounts {
                    features.push("recursive-read-only-mounts");
                }
                if f.user_namespaces {
                    features.push("user-namespaces");
                }
            }
            let name = if h.name.is_empty() {
                "(default)"
            } else {
                &h.name
            };
            handlers.row(vec![name.to_string(), features.join(", ")]);
        }
        handlers.write(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{RuntimeCondition, RuntimeHandler, RuntimeStatus};

    #[test]
    fn status_shows_conditions_and_handlers() {
        let status = StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![
                    RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        ..Default::default()
                    },
                    RuntimeCondition {
                        r#type: "NetworkReady".into(),
                        status: false,
                        reason: "NoNetwork".into(),
                        message: "not yet".into(),
                    },
                ],
            }),
            runtime_handlers: vec![RuntimeHandler {
                name: String::new(),
                features: None,
            }],
            ..Default::default()
        };
        let mut out = Vec::new();
        write_status(&status, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CONDITION      STATUS   REASON      MESSAGE\n\
             RuntimeReady   true\n\
             NetworkReady   false    NoNetwork   not yet\n\
             \n\
             RUNTIME HANDLER   FEATURES\n\
             (default)\n"
        );
    }
}
