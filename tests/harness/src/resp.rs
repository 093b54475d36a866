//! A tiny blocking Redis-protocol (RESP2) client, enough to send `GRAPH.QUERY` to
//! FalkorDB in tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One RESP2 reply value.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `None` is the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None` is the null array.
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The value as text, for simple and bulk strings.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Resp::Simple(s) => Some(s),
            Resp::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[Resp]> {
        match self {
            Resp::Array(Some(items)) => Some(items),
            _ => None,
        }
    }
}

/// A connection to a Redis-protocol server.
pub struct RespClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RespClient {
    /// Connects to `127.0.0.1:<port>`; reads and writes time out after 30 s.
    pub fn connect(port: u16) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one command and reads its reply; an error reply is an `Err`.
    pub fn command(&mut self, args: &[&str]) -> anyhow::Result<Resp> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)?;
        match self.read()? {
            Resp::Error(e) => anyhow::bail!("server error: {e}"),
            reply => Ok(reply),
        }
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        anyhow::ensure!(line.ends_with("\r\n"), "connection closed mid-reply");
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read(&mut self) -> anyhow::Result<Resp> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1);
        Ok(match kind {
            "+" => Resp::Simple(rest.to_owned()),
            "-" => Resp::Error(rest.to_owned()),
            ":" => Resp::Integer(rest.parse()?),
            "$" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    Resp::Bulk(None)
                } else {
                    let mut body = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut body)?;
                    body.truncate(len as usize);
                    Resp::Bulk(Some(body))
                }
            }
            "*" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    Resp::Array(None)
                } else {
                    let mut items = Vec::with_capacity(len as usize);
                    for _ in 0..len {
                        items.push(self.read()?);
                    }
                    Resp::Array(Some(items))
                }
            }
            other => anyhow::bail!("unexpected RESP type {other:?}"),
        })
    }
}
