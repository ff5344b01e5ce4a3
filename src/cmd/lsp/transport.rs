//! The server's standard input and output: LSP base protocol frames
//! (`Content-Length` headers, then a JSON body) read into `lsp_server`
//! messages, and messages written back.
//!
//! `lsp_server::Connection::stdio` stops reading at the first frame it cannot
//! decode, which would leave a client talking to a deaf server. This reader
//! answers such a frame instead, as JSON-RPC says, and goes on: a body that is
//! not JSON gets a parse error (-32700), JSON that is not a message an invalid
//! request error (-32600, with the message's id when it has one), a frame
//! without a length or with a bad header a parse error. Errors with no id to
//! answer (`"id": null`) cannot be an `lsp_server::Response`, so the reader
//! writes them itself, each whole frame under the lock of standard output, as
//! the writer writes the others.

use lsp_server::{Connection, ErrorCode, Message};
use std::io::{self, BufRead, Read, Write};
use std::thread::JoinHandle;

/// The largest body read, 1 GiB; a larger one is skipped and refused.
const MAX_BODY: usize = 1 << 30;
/// The longest header line read.
const MAX_HEADER: u64 = 4096;

/// The reader and writer threads of standard input and output.
pub struct IoThreads {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl IoThreads {
    /// Wait for the writer to send what the server sent. The reader may be
    /// blocked on a client that keeps its end open; it is not waited for.
    pub fn join(self) {
        let _ = self.writer.join();
        drop(self.reader);
    }
}

/// A connection over standard input and output.
pub fn stdio() -> (Connection, IoThreads) {
    let (server, client) = Connection::memory();
    let Connection { sender, receiver } = client;
    let reader = std::thread::spawn(move || {
        let mut input = io::stdin().lock();
        read_all(
            &mut input,
            |msg| sender.send(msg).is_ok(),
            |frame| write_frame(&frame),
        );
    });
    let writer = std::thread::spawn(move || {
        for msg in receiver {
            let mut out = io::stdout().lock();
            if msg.write(&mut out).is_err() {
                break;
            }
        }
    });
    (server, IoThreads { reader, writer })
}

/// Read frames until the end of the input (or `exit`, or `deliver` refusing):
/// messages go to `deliver`, answers to undecodable frames to `answer`.
pub fn read_all(
    input: &mut impl BufRead,
    mut deliver: impl FnMut(Message) -> bool,
    mut answer: impl FnMut(String) -> io::Result<()>,
) {
    loop {
        let frame = match read_frame(input) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => return,
        };
        match decode(frame) {
            Ok(msg) => {
                let exit = matches!(&msg, Message::Notification(n) if n.method == "exit");
                if !deliver(msg) || exit {
                    return;
                }
            }
            Err(reply) => {
                if answer(reply).is_err() {
                    return;
                }
            }
        }
    }
}

/// A frame's body, or why there is none.
enum Frame {
    Body(Vec<u8>),
    Bad(String),
}

/// Read one frame: header lines up to an empty one, then `Content-Length`
/// bytes. `None` at the end of the input.
fn read_frame(input: &mut impl BufRead) -> io::Result<Option<Frame>> {
    let mut length: Option<Result<usize, String>> = None;
    let mut bad: Option<String> = None;
    let mut line = Vec::new();
    let mut any = false;
    loop {
        line.clear();
        let n = input
            .by_ref()
            .take(MAX_HEADER)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(any.then(|| Frame::Bad("the input ended inside a header".into())));
        }
        any = true;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if !line.ends_with(b"\n") {
            bad.get_or_insert_with(|| "a header line is too long".into());
            continue;
        }
        if text.is_empty() {
            break;
        }
        match text.split_once(':') {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("content-length") => {
                length = Some(
                    value
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| format!("bad Content-Length `{}`", value.trim())),
                );
            }
            Some(_) => {}
            None => {
                bad.get_or_insert_with(|| format!("malformed header `{text}`"));
            }
        }
    }
    let length = match length {
        None => {
            return Ok(Some(Frame::Bad(
                bad.unwrap_or("no Content-Length header".into()),
            )));
        }
        Some(Err(why)) => return Ok(Some(Frame::Bad(why))),
        Some(Ok(n)) => n,
    };
    if length > MAX_BODY {
        io::copy(&mut input.by_ref().take(length as u64), &mut io::sink())?;
        return Ok(Some(Frame::Bad(format!(
            "a message of {length} bytes is larger than lbp lsp reads ({MAX_BODY})"
        ))));
    }
    let mut body = vec![0; length];
    input.read_exact(&mut body)?;
    Ok(Some(match bad {
        Some(why) => Frame::Bad(why),
        None => Frame::Body(body),
    }))
}

/// A frame as a message, or the error response (a whole JSON text) to send.
fn decode(frame: Frame) -> Result<Message, String> {
    let body = match frame {
        Frame::Body(body) => body,
        Frame::Bad(why) => return Err(reply(serde_json::Value::Null, ErrorCode::ParseError, &why)),
    };
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        reply(
            serde_json::Value::Null,
            ErrorCode::ParseError,
            &format!("the message is not JSON: {e}"),
        )
    })?;
    let id = match value.get("id") {
        Some(id @ (serde_json::Value::Number(_) | serde_json::Value::String(_))) => id.clone(),
        _ => serde_json::Value::Null,
    };
    serde_json::from_value(value).map_err(|e| {
        reply(
            id,
            ErrorCode::InvalidRequest,
            &format!("not a JSON-RPC request, response or notification: {e}"),
        )
    })
}

fn reply(id: serde_json::Value, code: ErrorCode, message: &str) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code as i32, "message": message },
    })
    .to_string()
}

/// Write one JSON text as a frame on standard output.
fn write_frame(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    write!(out, "Content-Length: {}\r\n\r\n{text}", text.len())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (Vec<Message>, Vec<serde_json::Value>) {
        let (mut msgs, mut errors) = (Vec::new(), Vec::new());
        read_all(
            &mut &input[..],
            |m| {
                msgs.push(m);
                true
            },
            |e| {
                errors.push(serde_json::from_str(&e).unwrap());
                Ok(())
            },
        );
        (msgs, errors)
    }

    fn frame(body: &str) -> String {
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    }

    #[test]
    fn bad_frames_are_answered_and_reading_goes_on() {
        let good = frame(r#"{"jsonrpc":"2.0","id":1,"method":"shutdown"}"#);
        let input = [
            frame("{not json"),
            frame(r#"{"jsonrpc":"2.0","id":7}"#),
            frame(r#"[1,2]"#),
            "Content-Length: x\r\n\r\n".to_string(),
            "Bogus\r\n\r\n".to_string(),
            good.clone(),
            "Content-Length: 5\r\n\r\né".to_string(),
        ]
        .concat();
        let (msgs, errors) = run(input.as_bytes());
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(matches!(&msgs[0], Message::Request(r) if r.method == "shutdown"));
        let codes: Vec<(i64, serde_json::Value)> = errors
            .iter()
            .map(|e| (e["error"]["code"].as_i64().unwrap(), e["id"].clone()))
            .collect();
        let null = serde_json::Value::Null;
        assert_eq!(
            codes,
            [
                (-32700, null.clone()),
                (-32600, serde_json::json!(7)),
                (-32600, null.clone()),
                (-32700, null.clone()),
                (-32700, null.clone()),
            ]
        );
    }
}
