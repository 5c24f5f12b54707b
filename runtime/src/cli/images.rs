//! `cocoon images`: what cocoond's image store holds.

use super::error::{Error, RpcResult};
use super::output::{human_size, short_id, Table};
use crate::cri_client::CriClient;
use k8s_cri::v1::{Image, ListImagesRequest};
use std::io::Write;

/// List the images cocoond holds.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Only the full image ids.
    #[arg(short, long)]
    pub quiet: bool,
}

pub async fn images(
    client: &mut CriClient,
    args: &ImagesArgs,
    out: &mut impl Write,
) -> Result<(), Error> {
    let images = client
        .images
        .list_images(ListImagesRequest { filter: None })
        .await
        .rpc("list images")?
        .images;
    if args.quiet {
        for image in &images {
            writeln!(out, "{}", image.id)?;
        }
        return Ok(());
    }
    images_table(&images).write(out)?;
    Ok(())
}

/// One row per tag; an image without tags shows its repository from a digest, or `<none>`.
pub fn images_table(images: &[Image]) -> Table {
    let mut table = Table::new(&["IMAGE", "TAG", "IMAGE-ID", "SIZE"]);
    let mut rows = Vec::new();
    for image in images {
        let names: Vec<(String, String)> = if image.repo_tags.is_empty() {
            let repository = image
                .repo_digests
                .first()
                .and_then(|d| d.split_once('@'))
                .map_or("<none>", |(repo, _)| repo);
            vec![(repository.to_string(), "<none>".to_string())]
        } else {
            image.repo_tags.iter().map(|t| split_tag(t)).collect()
        };
        for (repository, tag) in names {
            rows.push(vec![
                repository,
                tag,
                short_id(&image.id).to_string(),
                human_size(image.size),
            ]);
        }
    }
    rows.sort();
    for row in rows {
        table.row(row);
    }
    table
}

/// `registry:5000/app:1.2` → (`registry:5000/app`, `1.2`); no tag → `<none>`.
pub fn split_tag(reference: &str) -> (String, String) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => {
            let at = name_start + i;
            (reference[..at].to_string(), reference[at + 1..].to_string())
        }
        None => (reference.to_string(), "<none>".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_after_the_last_slash() {
        let s = |r: &str| {
            let (a, b) = split_tag(r);
            (a, b)
        };
        assert_eq!(
            s("docker.io/library/busybox:1.36"),
            ("docker.io/library/busybox".into(), "1.36".into())
        );
        assert_eq!(
            s("localhost:5000/app"),
            ("localhost:5000/app".into(), "<none>".into())
        );
        assert_eq!(
            s("localhost:5000/app:v2"),
            ("localhost:5000/app".into(), "v2".into())
        );
    }

    #[test]
    fn the_table_has_a_row_per_tag() {
        let images = [
            Image {
                id: "sha256:aaaaaaaaaaaaaaaaaaaa".into(),
                repo_tags: vec![
                    "docker.io/library/busybox:1.36".into(),
                    "busybox:latest".into(),
                ],
                size: 4_261_000,
                ..Default::default()
            },
            Image {
                id: "sha256:bbbbbbbbbbbbbbbbbbbb".into(),
                repo_digests: vec!["ghcr.io/x/y@sha256:cc".into()],
                size: 999,
                ..Default::default()
            },
        ];
        let mut out = Vec::new();
        images_table(&images).write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "IMAGE                       TAG      IMAGE-ID        SIZE\n\
             busybox                     latest   aaaaaaaaaaaaa   4.26MB\n\
             docker.io/library/busybox   1.36     aaaaaaaaaaaaa   4.26MB\n\
             ghcr.io/x/y                 <none>   bbbbbbbbbbbbb   999B\n"
        );
    }
}
