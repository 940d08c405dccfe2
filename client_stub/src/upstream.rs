//! The link to the server: connect, say hello, and settle on a name.

use common::say;
use std::io::IsTerminal;

use common::conn::{FrameReader, FrameWriter};
use common::proto::{Hello, ToClient, ToServer, PROTOCOL_VERSION};
use common::{Error, Result};
use smol::net::TcpStream;

/// What to do when the server says the name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamePolicy {
    /// Exit with the server's reason.
    Fail,
    /// Try `NAME-2`, `NAME-3`, ... and say which name was taken.
    Suffix,
    /// Ask for another name at the terminal.
    Ask,
}

/// A joined connection to the server.
pub struct Link {
    /// The name the server accepted.
    pub name: String,
    pub reader: FrameReader<TcpStream>,
    pub writer: FrameWriter<TcpStream>,
    pub stream: TcpStream,
}

/// Connects to `server` and joins as `name`, following `policy` if the name is taken.
///
/// # Errors
/// The server cannot be reached, refused the stub, or speaks something else.
pub async fn join(
    server: &str,
    name: &str,
    token: Option<&str>,
    policy: NamePolicy,
    max_frame: usize,
) -> Result<Link> {
    let mut candidate = name.to_owned();
    for attempt in 2.. {
        match hello(server, &candidate, token, max_frame).await? {
            Ok(link) => return Ok(link),
            Err(reason) => {
                let retry = |next: &str| say!("the name '{candidate}' is taken ({reason}); {next}");
                candidate = match policy {
                    NamePolicy::Suffix if attempt <= 100 => {
                        retry("trying another");
                        format!("{name}-{attempt}")
                    }
                    NamePolicy::Ask if std::io::stdin().is_terminal() => {
                        retry("please choose another");
                        ask_name().await?
                    }
                    _ => {
                        return Err(Error::Config(format!(
                            "the server refused the name '{candidate}': {reason} \
                             (choose another with -n/--name or profile key name, \
                             or allow a suffix with --name-suffix / name_suffix = true)"
                        )))
                    }
                };
            }
        }
    }
    unreachable!("the loop returns")
}

/// One attempt: `Ok(Err(reason))` when the name is taken.
async fn hello(
    server: &str,
    name: &str,
    token: Option<&str>,
    max_frame: usize,
) -> Result<Result<Link, String>> {
    let stream = TcpStream::connect(server)
        .await
        .map_err(|e| Error::Config(format!("cannot reach the server at {server}: {e}")))?;
    stream.set_nodelay(true)?;
    let mut reader = FrameReader::new(stream.clone(), max_frame);
    let mut writer = FrameWriter::new(stream.clone());
    let hello = ToServer::Hello(Hello {
        version: PROTOCOL_VERSION,
        name: name.to_owned(),
        token: token.map(str::to_owned),
    });
    writer.send(&hello).await?;
    match reader.read::<ToClient>().await? {
        Some(ToClient::Welcome { name, .. }) => Ok(Ok(Link {
            name,
            reader,
            writer,
            stream,
        })),
        Some(ToClient::Refused {
            reason,
            name_taken: true,
        }) => Ok(Err(reason)),
        Some(ToClient::Refused { reason, .. }) => Err(Error::Config(format!(
            "the server at {server} refused this stub: {reason}"
        ))),
        Some(other) => Err(Error::Protocol(format!("expected welcome, got {other:?}"))),
        None => Err(Error::Protocol(format!(
            "the server at {server} closed the connection"
        ))),
    }
}

/// Reads a new name from the terminal.
pub async fn ask_name() -> Result<String> {
    smol::unblock(|| {
        use std::io::Write;
        print!("name: ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let name = line.trim().to_owned();
        if name.is_empty() {
            return Err(Error::Config("no name given".into()));
        }
        Ok(name)
    })
    .await
}
