//! `cocoon pull`: fetch an image into cocoond's store.

use super::error::{Error, RpcResult};
use super::output::human_size;
use super::parse::{self, Creds};
use crate::cri_client::CriClient;
use indicatif::{ProgressBar, ProgressStyle};
use k8s_cri::v1::{AuthConfig, Image, ImageSpec, ImageStatusRequest, PullImageRequest};
use std::io::Write;
use std::time::{Duration, Instant};

/// Pull an image (CRI reports no progress while it pulls: you see a spinner and the time).
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The image, as `docker pull` takes it (`busybox`, `ghcr.io/org/app:1.2`).
    pub image: String,
    /// Registry credentials.
    #[arg(long, value_name = "USER:PASSWORD", value_parser = parse::creds)]
    pub creds: Option<Creds>,
}

pub async fn pull(
    client: &mut CriClient,
    args: &PullArgs,
    out: &mut impl Write,
) -> Result<(), Error> {
    let started = Instant::now();
    let image = pull_image(client, &args.image, args.creds.as_ref()).await?;
    writeln!(
        out,
        "Pulled {} in {:.1}s",
        args.image,
        started.elapsed().as_secs_f64()
    )?;
    writeln!(out, "Image ID: {}", image.id)?;
    writeln!(out, "Size: {}", human_size(image.size))?;
    Ok(())
}

/// Pulls `image` with a spinner on a terminal's stderr; returns what the store now holds.
pub async fn pull_image(
    client: &mut CriClient,
    image: &str,
    creds: Option<&Creds>,
) -> Result<Image, Error> {
    let request = PullImageRequest {
        image: Some(image_spec(image)),
        auth: creds.map(|c| AuthConfig {
            username: c.username.clone(),
            password: c.password.clone(),
            ..Default::default()
        }),
        sandbox_config: None,
    };
    let spinner = spinner(format!("pulling {image}"));
    let pulled = client.images.pull_image(request).await.rpc("pull image");
    spinner.finish_and_clear();
    let image_ref = pulled?.image_ref;
    tracing::debug!(image, image_ref, "pulled");
    // The store knows the pulled image by its reference; the name is the fallback.
    for name in [image_ref.as_str(), image] {
        if let Some(found) = image_status(client, name).await? {
            return Ok(found);
        }
    }
    Ok(Image {
        id: image_ref,
        ..Default::default()
    })
}

/// The stored image `image` names, if there is one.
pub async fn image_status(client: &mut CriClient, image: &str) -> Result<Option<Image>, Error> {
    if image.is_empty() {
        return Ok(None);
    }
    let request = ImageStatusRequest {
        image: Some(image_spec(image)),
        verbose: false,
    };
    Ok(client
        .images
        .image_status(request)
        .await
        .rpc("image status")?
        .image)
}

pub fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_string(),
        user_specified_image: image.to_string(),
        ..Default::default()
    }
}

/// A spinner with the time elapsed, drawn only where stderr is a terminal.
pub fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
