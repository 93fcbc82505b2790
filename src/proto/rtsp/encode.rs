//! Serialising messages. `Content-Length` is always derived from the body.

use bytes::{BufMut, BytesMut};

use super::{Headers, InterleavedFrame, Message, Request, Response, VERSION};

fn put_headers_and_body(out: &mut BytesMut, headers: &Headers, body: &[u8]) {
    for (name, value) in headers.iter() {
        if name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if !body.is_empty() {
        out.put_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
}

impl Request {
    /// Appends the request in wire format.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(self.method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.url.as_bytes());
        out.put_u8(b' ');
        out.put_slice(VERSION.as_bytes());
        out.put_slice(b"\r\n");
        put_headers_and_body(out, &self.headers, &self.body);
    }
}

impl Response {
    /// Appends the response in wire format.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(VERSION.as_bytes());
        out.put_slice(format!(" {} ", self.status.0).as_bytes());
        out.put_slice(self.reason.as_bytes());
        out.put_slice(b"\r\n");
        put_headers_and_body(out, &self.headers, &self.body);
    }
}

impl InterleavedFrame {
    /// The 4-byte `$` header of a frame on `channel` carrying `len` bytes.
    ///
    /// Returns `None` when `len` does not fit the 16-bit length field.
    pub fn header(channel: u8, len: usize) -> Option<[u8; 4]> {
        let len = u16::try_from(len).ok()?;
        let [hi, lo] = len.to_be_bytes();
        Some([b'$', channel, hi, lo])
    }

    /// Appends the frame in wire format; payloads over 65535 bytes are refused with `false`.
    pub fn encode(&self, out: &mut BytesMut) -> bool {
        match Self::header(self.channel, self.payload.len()) {
            Some(header) => {
                out.put_slice(&header);
                out.put_slice(&self.payload);
                true
            }
            None => false,
        }
    }
}

impl Message {
    /// Appends the message in wire format (`false` if it is a frame too large to encode).
    pub fn encode(&self, out: &mut BytesMut) -> bool {
        match self {
            Message::Request(r) => r.encode(out),
            Message::Response(r) => r.encode(out),
            Message::Frame(f) => return f.encode(out),
        }
        true
    }
}
