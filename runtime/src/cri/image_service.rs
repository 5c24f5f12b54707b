//! `runtime.v1.ImageService` over the image store.

use super::status::image_code;
use crate::daemon::{now_ns, Daemon};
use cocoon_image::{Image as StoredImage, ImageError, RegistryAuth};
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Images {
    pub daemon: Arc<Daemon>,
}

type R<T> = Result<Response<T>, Status>;

fn image_status(e: ImageError) -> Status {
    Status::new(image_code(&e), e.to_string())
}

fn cri_image(i: &StoredImage) -> Image {
    let (uid, username) = match i.config.user.split(':').next().unwrap_or("") {
        "" => (Some(Int64Value { value: 0 }), String::new()),
        u => match u.parse::<i64>() {
            Ok(n) => (Some(Int64Value { value: n }), String::new()),
            Err(_) => (None, u.to_string()),
        },
    };
    Image {
        id: i.id.clone(),
        repo_tags: i.repo_tags.clone(),
        repo_digests: i.repo_digests.clone(),
        size: i.size,
        uid,
        username,
        spec: Some(ImageSpec {
            image: i.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// Credentials of a CRI pull: username/password, or `auth` (base64 of "user:pass").
fn auth(a: Option<AuthConfig>) -> Result<Option<RegistryAuth>, Status> {
    let Some(a) = a else { return Ok(None) };
    if !a.username.is_empty() {
        return Ok(Some(RegistryAuth::basic(a.username, a.password)));
    }
    if !a.auth.is_empty() {
        let decoded = base64_decode(&a.auth)
            .ok_or_else(|| Status::invalid_argument("auth.auth: not base64"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| Status::invalid_argument("auth.auth: not UTF-8"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| Status::invalid_argument("auth.auth: not user:password"))?;
        return Ok(Some(RegistryAuth::basic(u.into(), p.into())));
    }
    if !a.registry_token.is_empty() {
        return Ok(Some(RegistryAuth::bearer(a.registry_token)));
    }
    if !a.identity_token.is_empty() {
        return Err(Status::unimplemented(
            "auth.identity_token: OAuth refresh tokens are not supported yet; give username/password or registry_token",
        ));
    }
    Ok(None)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(&self, r: Request<ListImagesRequest>) -> R<ListImagesResponse> {
        let want = r
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .unwrap_or_default();
        let images = if want.is_empty() {
            self.daemon.images.list()
        } else {
            self.daemon.images.get(&want).into_iter().collect()
        };
        Ok(Response::new(ListImagesResponse {
            images: images.iter().map(cri_image).collect(),
        }))
    }

    async fn image_status(&self, r: Request<ImageStatusRequest>) -> R<ImageStatusResponse> {
        let r = r.into_inner();
        let name = r.image.map(|s| s.image).unwrap_or_default();
        if name.is_empty() {
            return Err(Status::invalid_argument("image.image: is empty"));
        }
        // CRI: an image that is not present is an empty answer, not an error.
        let Some(i) = self.daemon.images.get(&name) else {
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if r.verbose {
            let v = serde_json::json!({
                "rootfs": i.rootfs,
                "pulledAtUnixNs": i.pulled_at_unix_ns,
                "config": {
                    "user": i.config.user, "env": i.config.env, "entrypoint": i.config.entrypoint,
                    "cmd": i.config.cmd, "workingDir": i.config.working_dir,
                },
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(cri_image(&i)),
            info,
        }))
    }

    async fn pull_image(&self, r: Request<PullImageRequest>) -> R<PullImageResponse> {
        let r = r.into_inner();
        let name = r.image.map(|s| s.image).unwrap_or_default();
        if name.is_empty() {
            return Err(Status::invalid_argument("image.image: is empty"));
        }
        let creds = auth(r.auth)?;
        let image = self
            .daemon
            .images
            .pull(&name, creds)
            .await
            .map_err(image_status)?;
        Ok(Response::new(PullImageResponse {
            image_ref: image.id,
        }))
    }

    async fn remove_image(&self, r: Request<RemoveImageRequest>) -> R<RemoveImageResponse> {
        let name = r.into_inner().image.map(|s| s.image).unwrap_or_default();
        if name.is_empty() {
            return Err(Status::invalid_argument("image.image: is empty"));
        }
        match self.daemon.images.remove(&name) {
            Ok(()) => {}
            // Removing what is gone succeeds (kubelet's image GC retries).
            Err(e) if image_code(&e) == tonic::Code::NotFound => {}
            Err(e) => return Err(image_status(e)),
        }
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(&self, _: Request<ImageFsInfoRequest>) -> R<ImageFsInfoResponse> {
        // The store is walked: off the async workers.
        let images = self.daemon.images.clone();
        let u = tokio::task::spawn_blocking(move || images.usage())
            .await
            .map_err(|e| Status::internal(format!("image fs usage: {e}")))?;
        let fs = FilesystemUsage {
            timestamp: now_ns(),
            fs_id: Some(FilesystemIdentifier {
                mountpoint: u.root.to_string_lossy().into_owned(),
            }),
            used_bytes: Some(UInt64Value { value: u.bytes }),
            inodes_used: Some(UInt64Value { value: u.inodes }),
        };
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_credentials() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("!!!!").is_none());
        assert!(base64_decode("Q").is_none());
        let s = auth(Some(AuthConfig {
            auth: "bm9jb2xvbg==".into(),
            ..Default::default()
        }))
        .unwrap_err();
        assert!(s.message().contains("auth.auth"));
    }
}
