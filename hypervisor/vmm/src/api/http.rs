//! Just enough HTTP/1.1 for the API: one bounded request read from a stream (parsed
//! with `httparse`), one JSON response written back. Nothing a client sends can make
//! the server allocate more than [`MAX_HEAD`] + [`MAX_BODY`] bytes for it.

use std::io::{self, Read, Write};

use serde_json::Value;

/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 32;
/// Largest request body.
pub const MAX_BODY: usize = 64 * 1024;

/// A request the API serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without a query string.
    pub path: String,
    pub body: Vec<u8>,
}

/// Why a request could not be read. Those with a [`HttpError::status`] are answered
/// with it; the others end the connection without an answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request head larger than {MAX_HEAD} bytes or with more than {MAX_HEADERS} headers")]
    HeadTooLarge,
    #[error("request body of {0} bytes is larger than {MAX_BODY}")]
    BodyTooLarge(u64),
    #[error("transfer encodings are not supported; send Content-Length")]
    TransferEncoding,
    #[error("the connection closed before the request was complete")]
    Incomplete,
    #[error("reading the request")]
    Io(#[source] io::Error),
}

impl HttpError {
    /// The status to answer with, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Malformed(_) => Some(400),
            HttpError::HeadTooLarge => Some(431),
            HttpError::BodyTooLarge(_) => Some(413),
            HttpError::TransferEncoding => Some(501),
            HttpError::Incomplete | HttpError::Io(_) => None,
        }
    }
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub content_length: usize,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    /// Length of the head in bytes: the body starts there.
    pub len: usize,
}

/// Parses the request head at the start of `buf`; `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(HttpError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if len > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    // A complete parse always has these.
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(HttpError::Malformed("no request line".into()));
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if !path.starts_with('/') {
        return Err(HttpError::Malformed(format!(
            "request target {target:?} is not a path"
        )));
    }
    let mut content_length: Option<u64> = None;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| HttpError::Malformed("bad Content-Length".into()))?;
            if content_length.is_some_and(|c| c != v) {
                return Err(HttpError::Malformed("conflicting Content-Length".into()));
            }
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_BODY as u64 {
        return Err(HttpError::BodyTooLarge(content_length));
    }
    Ok(Some(Head {
        method: method.to_owned(),
        path: path.to_owned(),
        content_length: content_length as usize,
        expect_continue,
        len,
    }))
}

/// Reads one request from `stream`, answering `Expect: 100-continue` on it. Bytes
/// after the request (a pipelined second one) are ignored: the server answers one
/// request per connection.
pub fn read_request<S: Read + Write>(stream: &mut S) -> Result<Request, HttpError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let head = loop {
        if let Some(head) = parse_head(&buf)? {
            break head;
        }
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        let n = read_some(stream, &mut chunk[..room])?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let end = head.len + head.content_length;
    if head.expect_continue && buf.len() < end {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(HttpError::Io)?;
    }
    buf.truncate(end);
    while buf.len() < end {
        let room = (end - buf.len()).min(chunk.len());
        let n = read_some(stream, &mut chunk[..room])?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Request {
        method: head.method,
        path: head.path,
        body: buf.split_off(head.len),
    })
}

/// One read of at least a byte.
fn read_some(stream: &mut impl Read, into: &mut [u8]) -> Result<usize, HttpError> {
    loop {
        match stream.read(into) {
            Ok(0) => return Err(HttpError::Incomplete),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HttpError::Io(e)),
        }
    }
}

/// A response: a status and an optional JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Option<Value>,
    /// The methods the path takes (for 405).
    pub allow: Option<&'static str>,
}

impl Response {
    /// 204 No Content.
    pub fn no_content() -> Response {
        Response {
            status: 204,
            body: None,
            allow: None,
        }
    }

    /// `status` with `body`.
    pub fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            body: Some(body),
            allow: None,
        }
    }

    /// `status` with `{"error": message}`.
    pub fn error(status: u16, message: impl std::fmt::Display) -> Response {
        Response::json(status, serde_json::json!({ "error": message.to_string() }))
    }

    /// The bytes on the wire; the connection closes after it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if let Some(allow) = self.allow {
            out.push_str(&format!("Allow: {allow}\r\n"));
        }
        out.push_str("Connection: close\r\n");
        let body = self.body.as_ref().map(Value::to_string);
        if let Some(body) = &body {
            out.push_str("Content-Type: application/json\r\n");
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        } else if self.status != 204 {
            out.push_str("Content-Length: 0\r\n");
        }
        out.push_str("\r\n");
        if let Some(body) = body {
            out.push_str(&body);
        }
        out.into_bytes()
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.to_bytes())?;
        w.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client: its bytes arrive in `chunks`-sized reads; what the server writes
    /// back is kept.
    struct Conn {
        input: Vec<u8>,
        at: usize,
        chunks: Vec<usize>,
        reads: usize,
        output: Vec<u8>,
    }

    impl Conn {
        fn new(input: &[u8], chunks: Vec<usize>) -> Conn {
            Conn {
                input: input.to_vec(),
                at: 0,
                chunks,
                reads: 0,
                output: Vec::new(),
            }
        }
    }

    impl Read for Conn {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = match self.chunks.len() {
                0 => usize::MAX,
                n => self.chunks[self.reads % n].max(1),
            };
            self.reads += 1;
            let n = size.min(buf.len()).min(self.input.len() - self.at);
            buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Write for Conn {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn read(input: &[u8]) -> Result<Request, HttpError> {
        read_request(&mut Conn::new(input, vec![]))
    }

    #[test]
    fn a_put_with_a_body_is_read_whole() {
        let r = read(b"PUT /vm/config?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{}  ")
            .unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/vm/config");
        assert_eq!(r.body, b"{}  ");
        let r = read(b"GET /vm HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/vm"));
        assert!(r.body.is_empty());
    }

    #[test]
    fn limits_map_to_their_statuses() {
        let big = format!("PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        let e = read(big.as_bytes()).unwrap_err();
        assert_eq!(e.status(), Some(413), "{e}");
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(read(long.as_bytes()).unwrap_err().status(), Some(431));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(read(many.as_bytes()).unwrap_err().status(), Some(431));
        let chunked = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(read(chunked).unwrap_err().status(), Some(501));
    }

    #[test]
    fn malformed_heads_are_400_and_short_ones_are_incomplete() {
        for bad in [
            &b"GET\x01 / HTTP/1.1\r\n\r\n"[..],
            b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
        ] {
            let e = read(bad).unwrap_err();
            assert_eq!(e.status(), Some(400), "{bad:?}: {e}");
        }
        let e = read(b"PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc").unwrap_err();
        assert!(matches!(e, HttpError::Incomplete), "{e}");
        assert!(matches!(read(b"").unwrap_err(), HttpError::Incomplete));
    }

    #[test]
    fn expect_continue_is_answered_before_the_body() {
        let mut c = Conn::new(
            b"PUT /vm/config HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
            vec![68, 2],
        );
        let r = read_request(&mut c).unwrap();
        assert_eq!(r.body, b"{}");
        assert_eq!(c.output, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn responses_have_a_length_and_close() {
        let r = Response::error(409, "nope").to_bytes();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 409 Conflict\r\n"), "{text}");
        assert!(text.contains("Content-Length: 16\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"error\":\"nope\"}"), "{text}");
        let text = String::from_utf8(Response::no_content().to_bytes()).unwrap();
        assert_eq!(text, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        let mut r = Response::error(405, "x");
        r.allow = Some("GET, PUT");
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.contains("Allow: GET, PUT\r\n"), "{text}");
    }

    fn request_bytes(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Garbage never panics and never makes a request out of more bytes than
        /// the limits allow.
        #[test]
        fn garbage_never_panics(
            input in proptest::collection::vec(any::<u8>(), 0..20_000),
            chunks in proptest::collection::vec(1usize..5000, 0..8),
        ) {
            let _ = parse_head(&input);
            if let Ok(r) = read_request(&mut Conn::new(&input, chunks)) {
                prop_assert!(r.body.len() <= MAX_BODY);
            }
        }

        /// Garbage after a plausible request line and headers.
        #[test]
        fn mangled_requests_never_panic(
            prefix in "(GET|PUT|PATCH) /[a-z/]{0,12} HTTP/1\\.[01]\r\n",
            headers in proptest::collection::vec("[A-Za-z-]{1,16}: [ -~]{0,40}\r\n", 0..40),
            tail in proptest::collection::vec(any::<u8>(), 0..300),
            chunks in proptest::collection::vec(1usize..64, 0..8),
        ) {
            let mut input = prefix.into_bytes();
            for h in headers {
                input.extend_from_slice(h.as_bytes());
            }
            input.extend_from_slice(b"\r\n");
            input.extend_from_slice(&tail);
            let _ = read_request(&mut Conn::new(&input, chunks));
        }

        /// However the bytes of a valid request are split into reads, it reads the same.
        #[test]
        fn splitting_does_not_change_the_request(
            method in "(GET|PUT)",
            path in "/[a-z]{0,10}(/[a-z]{1,10}){0,3}",
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            chunks in proptest::collection::vec(1usize..200, 1..8),
        ) {
            let bytes = request_bytes(&method, &path, &body);
            let r = read_request(&mut Conn::new(&bytes, chunks)).unwrap();
            prop_assert_eq!(r, Request { method, path, body });
        }
    }
}
