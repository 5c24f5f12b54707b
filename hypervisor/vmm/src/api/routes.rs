//! The endpoints: a request in, a response out (and what to do once it is sent).

use serde_json::json;

use super::http::{Request, Response};
use super::slot::{error_chain, SlotError, VmSlot};
use crate::config::VmConfig;
use crate::vmm::PauseError;

/// What the server does after the response went out.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// End the VM (and with it the process).
    Stop,
}

/// Each path and the methods it takes.
const ROUTES: &[(&str, &str)] = &[
    ("/vm", "GET"),
    ("/vm/config", "GET, PUT"),
    ("/vm/start", "PUT"),
    ("/vm/pause", "PUT"),
    ("/vm/resume", "PUT"),
    ("/vm/stop", "PUT"),
    ("/vm/devices", "GET"),
    ("/metrics", "GET"),
];

/// Serves `req` against `slot`.
pub fn handle(slot: &VmSlot, req: &Request) -> (Response, After) {
    let response = match (req.path.as_str(), req.method.as_str()) {
        ("/vm", "GET") => Response::json(200, slot.status()),
        ("/vm/config", "GET") => match slot.config() {
            Some(config) => match serde_json::to_value(&config) {
                Ok(v) => Response::json(200, v),
                Err(e) => Response::error(500, format!("serializing the configuration: {e}")),
            },
            None => Response::error(404, "no configuration has been set"),
        },
        ("/vm/config", "PUT") => match parse_config(&req.body) {
            Ok(config) => match slot.configure(config) {
                Ok(()) => Response::no_content(),
                Err(e) => conflict(e),
            },
            Err(message) => Response::error(400, message),
        },
        ("/vm/start", "PUT") => match slot.start() {
            Ok(Ok(())) => Response::no_content(),
            Ok(Err(failure)) => Response::error(failure.status, failure.message),
            Err(e) => conflict(e),
        },
        ("/vm/pause", "PUT") => with_vmm(slot, |vmm| pause_result(vmm.pause())),
        ("/vm/resume", "PUT") => with_vmm(slot, |vmm| pause_result(vmm.resume())),
        ("/vm/stop", "PUT") => return (Response::no_content(), After::Stop),
        ("/vm/devices", "GET") => with_vmm(slot, |vmm| Response::json(200, json!(vmm.devices()))),
        ("/metrics", "GET") => with_vmm(slot, |vmm| Response::json(200, vmm.metrics().snapshot())),
        (path, method) => match ROUTES.iter().find(|(p, _)| *p == path) {
            Some((_, allow)) => Response {
                allow: Some(allow),
                ..Response::error(405, format!("{method} {path}: use {allow}"))
            },
            None => Response::error(404, format!("no such path: {path}")),
        },
    };
    (response, After::Nothing)
}

/// A configuration from JSON, validated. The error names the field: serde's message
/// with the path to the field it failed at, or the validation's.
pub fn parse_config(body: &[u8]) -> Result<VmConfig, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let config: VmConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    config.validate().map_err(|e| error_chain(&e))?;
    Ok(config)
}

fn with_vmm(slot: &VmSlot, f: impl FnOnce(&crate::Vmm) -> Response) -> Response {
    match slot.vmm() {
        Some(vmm) => f(&vmm),
        None => conflict(match slot.status()["state"].as_str() {
            Some("ended") => SlotError::Ended,
            _ => SlotError::NotStarted,
        }),
    }
}

fn pause_result(r: Result<(), PauseError>) -> Response {
    match r {
        Ok(()) => Response::no_content(),
        Err(e @ PauseError::Timeout { .. }) => Response::error(500, e),
        Err(e) => Response::error(409, e),
    }
}

fn conflict(e: SlotError) -> Response {
    Response::error(409, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::BootSource;

    fn req(method: &str, path: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn call(slot: &VmSlot, method: &str, path: &str, body: &str) -> Response {
        handle(slot, &req(method, path, body)).0
    }

    fn error_of(r: &Response) -> String {
        r.body.as_ref().unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    const RAW: &str = r#"{"boot": {"raw": {"code": [244], "load_addr": 1048576}}}"#;

    #[test]
    fn config_round_trips_with_defaults_filled_in() {
        let slot = VmSlot::new();
        assert_eq!(call(&slot, "GET", "/vm/config", "").status, 404);
        assert_eq!(call(&slot, "PUT", "/vm/config", RAW).status, 204);
        let got = call(&slot, "GET", "/vm/config", "");
        assert_eq!(got.status, 200);
        let want = VmConfig::new(BootSource::Raw {
            code: vec![0xf4],
            load_addr: 0x10_0000,
        });
        assert_eq!(got.body.unwrap(), serde_json::to_value(&want).unwrap());
    }

    #[test]
    fn a_full_config_parses_every_field() {
        let json = r#"{
            "vcpus": 2, "memory_mib": 64, "serial": {"file": "/tmp/s.log"},
            "debug_exit": true, "entropy": true,
            "vsock": {"guest_cid": 7, "uds_path": "/tmp/v.sock"},
            "boot": {"kernel": {"path": "/k", "cmdline": "quiet", "initrd": "/i"}}
        }"#;
        let c = parse_config(json.as_bytes()).unwrap();
        assert_eq!(
            (c.vcpus, c.memory_mib, c.debug_exit, c.entropy),
            (2, 64, true, true)
        );
        assert_eq!(c.serial, crate::SerialOutput::File("/tmp/s.log".into()));
        assert_eq!(c.vsock.unwrap().guest_cid, 7);
        assert_eq!(
            c.boot,
            BootSource::Kernel {
                path: "/k".into(),
                cmdline: "quiet".into(),
                initrd: Some("/i".into())
            }
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (body, needle) in [
            (
                r#"{"vcpus": 300, "boot": {"raw": {"code": [1], "load_addr": 0}}}"#,
                "vcpus: ",
            ),
            (
                r#"{"vcpus": 0, "boot": {"raw": {"code": [1], "load_addr": 0}}}"#,
                "vcpus: 0 is not in",
            ),
            (r#"{"vcpu": 1}"#, "unknown field `vcpu`"),
            (
                r#"{"boot": {"kernel": {"path": "/k", "initrd": 5}}}"#,
                "boot.kernel.initrd: ",
            ),
            (
                r#"{"boot": {"kernel": {"path": "/k", "extra": 1}}}"#,
                "unknown field `extra`",
            ),
            (r#"{"boot": {"floppy": {}}}"#, "unknown variant `floppy`"),
            (
                r#"{"serial": "file", "boot": {"raw": {"code": [1], "load_addr": 0}}}"#,
                "serial",
            ),
            (
                r#"{"memory_mib": 1, "boot": {"raw": {"code": [1], "load_addr": 0}}}"#,
                "memory_mib: 1",
            ),
            (
                r#"{"vsock": {"guest_cid": 2, "uds_path": "/v"}, "boot": {"raw": {"code": [1], "load_addr": 0}}}"#,
                "guest_cid",
            ),
            (r#"{}"#, "missing field `boot`"),
            (r#"{"boot": "#, "EOF"),
            (
                r#"{"boot": {"raw": {"code": [1], "load_addr": 0}}} trailing"#,
                "trailing",
            ),
        ] {
            let slot = VmSlot::new();
            let r = call(&slot, "PUT", "/vm/config", body);
            assert_eq!(r.status, 400, "{body}");
            let e = error_of(&r);
            assert!(e.contains(needle), "{body}: {e}");
            assert_eq!(slot.config(), None);
        }
    }

    #[test]
    fn unknown_paths_and_wrong_methods() {
        let slot = VmSlot::new();
        let r = call(&slot, "GET", "/nope", "");
        assert_eq!(r.status, 404);
        let r = call(&slot, "POST", "/vm/config", "");
        assert_eq!((r.status, r.allow), (405, Some("GET, PUT")));
        let r = call(&slot, "GET", "/vm/start", "");
        assert_eq!((r.status, r.allow), (405, Some("PUT")));
    }

    #[test]
    fn vm_requests_before_a_start_conflict() {
        let slot = VmSlot::new();
        for (method, path) in [
            ("PUT", "/vm/start"),
            ("PUT", "/vm/pause"),
            ("PUT", "/vm/resume"),
            ("GET", "/vm/devices"),
            ("GET", "/metrics"),
        ] {
            let r = call(&slot, method, path, "");
            assert_eq!(r.status, 409, "{method} {path}");
        }
        assert_eq!(
            call(&slot, "GET", "/vm", "").body.unwrap()["state"],
            "not_started"
        );
        let (r, after) = handle(&slot, &req("PUT", "/vm/stop", ""));
        assert_eq!((r.status, after), (204, After::Stop));
    }
}
