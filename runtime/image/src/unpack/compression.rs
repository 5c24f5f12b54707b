//! Layer compression: chosen by media type, or sniffed from the first bytes when the
//! media type says plain tar or is one we do not know.

use std::io::{self, BufRead, BufReader, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const BZIP2_MAGIC: &[u8] = b"BZh";

impl Compression {
    /// The compression a layer media type names; `None` when it names plain tar or is
    /// unknown, in which case the content is sniffed.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if media_type.ends_with("+zstd") || media_type.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// Guesses from magic bytes; anything unrecognised is taken as plain tar.
    pub fn sniff(head: &[u8]) -> Result<Compression, String> {
        if head.starts_with(GZIP_MAGIC) {
            Ok(Compression::Gzip)
        } else if head.starts_with(ZSTD_MAGIC) {
            Ok(Compression::Zstd)
        } else if head.starts_with(XZ_MAGIC) {
            Err("xz-compressed layers are not supported".into())
        } else if head.starts_with(BZIP2_MAGIC) {
            Err("bzip2-compressed layers are not supported".into())
        } else {
            Ok(Compression::None)
        }
    }
}

/// The uncompressed tar stream of a layer: by `hint` when given, else sniffed.
pub(crate) fn decompressed<'a, R: Read + 'a>(
    raw: R,
    hint: Option<Compression>,
) -> io::Result<Box<dyn Read + 'a>> {
    let mut raw = BufReader::with_capacity(128 * 1024, raw);
    let compression = match hint {
        Some(c) => c,
        None => Compression::sniff(raw.fill_buf()?).map_err(io::Error::other)?,
    };
    Ok(match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(raw)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn media_types() {
        use Compression::{Gzip, Zstd};
        for (mt, want) in [
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Gzip),
            ),
            ("application/vnd.oci.image.layer.v1.tar", Option::None),
            ("application/octet-stream", Option::None),
        ] {
            assert_eq!(Compression::from_media_type(mt), want, "{mt}");
        }
    }

    fn read_all(r: &mut dyn Read) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn sniffs_gzip_zstd_and_plain() {
        let data = b"plain data that is not compressed".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        for blob in [&gz, &zst, &data] {
            let mut r = decompressed(&blob[..], None).unwrap();
            assert_eq!(read_all(&mut r), data);
        }
        let mut r = decompressed(&zst[..], Some(Compression::Zstd)).unwrap();
        assert_eq!(read_all(&mut r), data);
        // A media type that lies makes the decoder fail, never return garbage.
        let mut r = decompressed(&data[..], Some(Compression::Gzip)).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        assert!(decompressed(XZ_MAGIC, None).is_err());
        let mut empty = decompressed(&[][..], None).unwrap();
        assert!(read_all(&mut empty).is_empty());
    }
}
