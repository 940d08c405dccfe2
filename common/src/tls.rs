//! Transport for the stub–server link: plain TCP or TLS (rustls), behind one pair of boxed
//! reader/writer halves so the framing code never knows which. Also tells, from a connection's
//! first bytes, whether the other end speaks TLS ([`Speaks`]), so that a stub and a server that
//! disagree about TLS are told so, and makes the self-signed certificate a small network needs.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_rustls::rustls::pki_types::pem::{self, PemObject};
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use futures_rustls::{TlsAcceptor, TlsConnector};
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;

use crate::error::{Error, Result};
use crate::store::Kind;

/// The read half of a link.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a link.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// What the other end of a connection speaks, as its first bytes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    Tls,
    /// stubnet's newline-delimited JSON frames, in the clear.
    Frames,
    /// Something else, or nothing (it closed).
    Unknown,
}

impl Speaks {
    /// Tells what the first bytes (one or more) a peer sent are.
    pub fn from_first(bytes: &[u8]) -> Speaks {
        match bytes {
            // A TLS record starts with its content type (change_cipher_spec, alert, handshake,
            // application data), then major version 3; no frame starts so.
            [0x14..=0x17] | [0x14..=0x17, 0x03, ..] => Speaks::Tls,
            [b'{' | b' ' | b'\t' | b'\r' | b'\n', ..] => Speaks::Frames,
            _ => Speaks::Unknown,
        }
    }

    /// Waits for the first bytes `tcp` receives and tells what they are. They are only peeked
    /// at: whatever reads the connection next reads them too.
    pub async fn peek(tcp: &TcpStream) -> io::Result<Speaks> {
        let mut first = [0; 2];
        let n = tcp.peek(&mut first).await?;
        Ok(Speaks::from_first(&first[..n]))
    }
}

/// A plain TCP link's halves.
pub fn plain(tcp: &TcpStream) -> (Reader, Writer) {
    (Box::new(crate::readiness::tcp(tcp)), Box::new(tcp.clone()))
}

fn config_error(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what} {}: {e}", path.display()))
}

/// A file that holds no PEM item of the kind asked for (an empty file, a key given as the
/// certificate...): said so, rather than left to fail the handshake with a vaguer reason.
fn no_pem(what: &str, path: &Path) -> Error {
    Error::Config(format!(
        "no {what} in {}: a PEM file (-----BEGIN ...-----) is expected",
        path.display()
    ))
}

/// The server side of TLS: its certificate chain and key.
#[derive(Clone)]
pub struct Acceptor(TlsAcceptor);

impl Acceptor {
    /// Loads a PEM certificate chain and a PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| config_error("cannot read the certificate", cert, e))?;
        if chain.is_empty() {
            return Err(no_pem("certificate", cert));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
            pem::Error::NoItemsFound => no_pem("private key", key),
            e => config_error("cannot read the key", key, e),
        })?;
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| Error::Config(format!("bad certificate or key: {e}")))?;
        Ok(Acceptor(TlsAcceptor::from(Arc::new(config))))
    }

    /// Runs the handshake on an accepted connection.
    pub async fn accept(&self, tcp: TcpStream) -> Result<(Reader, Writer)> {
        let tls = self.0.accept(tcp).await?;
        let (r, w) = smol::io::split(tls);
        Ok((Box::new(r), Box::new(w)))
    }
}

/// The stub side of TLS: the certificates it trusts and the name it expects.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    name: ServerName<'static>,
}

impl Connector {
    /// Trusts the PEM certificates in `ca` (the server's own self-signed certificate will do)
    /// and expects the server to be `name`.
    pub fn load(ca: &Path, name: &str) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        let certs =
            CertificateDer::pem_file_iter(ca).map_err(|e| config_error("cannot read", ca, e))?;
        for cert in certs {
            let cert = cert.map_err(|e| config_error("bad certificate in", ca, e))?;
            roots
                .add(cert)
                .map_err(|e| config_error("bad certificate in", ca, e))?;
        }
        if roots.is_empty() {
            return Err(no_pem("certificate", ca));
        }
        let config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| Error::Config(format!("'{name}' is not a server name: {e}")))?;
        Ok(Connector {
            tls: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Runs the handshake on a new connection.
    ///
    /// # Errors
    /// Why the handshake failed, with what the server's first bytes show it speaks.
    pub async fn connect(
        &self,
        tcp: TcpStream,
    ) -> std::result::Result<(Reader, Writer), (Error, Speaks)> {
        let tcp = FirstBytes {
            tcp,
            first: [0; 2],
            len: 0,
        };
        // Fallible: a failed handshake gives the stream back, with the bytes it kept.
        let tls = self
            .tls
            .connect(self.name.clone(), tcp)
            .into_fallible()
            .await;
        match tls {
            Ok(tls) => {
                let (r, w) = smol::io::split(tls);
                Ok((Box::new(r), Box::new(w)))
            }
            Err((e, tcp)) => Err((
                Error::Config(self.explain(&e)),
                Speaks::from_first(&tcp.first[..tcp.len]),
            )),
        }
    }

    /// A failed handshake in the words of `--tls-ca` and `--tls-name`, where rustls's own
    /// ("invalid peer certificate: BadSignature") would leave the user to guess which is wrong.
    fn explain(&self, e: &io::Error) -> String {
        use futures_rustls::rustls::{CertificateError as Cert, Error as Tls};
        let Some(Tls::InvalidCertificate(cert)) = e.get_ref().and_then(|e| e.downcast_ref()) else {
            return e.to_string();
        };
        let why = match cert {
            Cert::UnknownIssuer | Cert::BadSignature => {
                "its certificate is not one tls_ca trusts (give the server's cert.pem)".to_owned()
            }
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => format!(
                "its certificate is not for the name '{}' (tls_name must be one gen-cert named)",
                self.name.to_str()
            ),
            Cert::Expired | Cert::ExpiredContext { .. } => {
                "its certificate has expired (make a new one with gen-cert)".to_owned()
            }
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
                "its certificate is not valid yet (is this machine's clock right?)".to_owned()
            }
            _ => return e.to_string(),
        };
        format!("{why}; rustls said: {e}")
    }
}

/// The stub's TCP stream under TLS, keeping the first bytes the server sent: rustls reads them
/// in the handshake, and a failed handshake is explained by them. Peeking cannot stand in: the
/// server may answer before the handshake's first read, and that read would take the answer.
struct FirstBytes {
    tcp: TcpStream,
    first: [u8; 2],
    len: usize,
}

impl AsyncRead for FirstBytes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
        // Past the first bytes, this costs one comparison per read of the socket.
        if this.len < this.first.len() {
            let more = n.min(this.first.len() - this.len);
            this.first[this.len..this.len + more].copy_from_slice(&buf[..more]);
            this.len += more;
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for FirstBytes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_close(cx)
    }
}

/// Writes a self-signed certificate for `names` (host names or IP addresses) and its key as
/// `cert.pem` and `key.pem` in `dir`. The key file is readable by its owner only. Files already
/// there are refused unless `replace`: a server and its stubs may be using them.
pub fn generate(
    names: &[String],
    dir: &Path,
    replace: bool,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    // A link counts, even one to nowhere: it is replaced, never written through.
    let existing: Vec<String> = [&cert, &key]
        .into_iter()
        .filter(|f| f.symlink_metadata().is_ok())
        .map(|f| f.display().to_string())
        .collect();
    if !replace && !existing.is_empty() {
        let (exist, them) = match existing.len() {
            1 => ("exists", "it"),
            _ => ("exist", "them"),
        };
        return Err(Error::Config(format!(
            "{} already {exist}: not replaced (--force replaces {them})",
            existing.join(" and ")
        )));
    }
    // A name a stub could not ask for (empty, a space in it) would make a certificate that no
    // stub can use: refused here, as a stub's `--tls-name` would refuse it.
    if let Some((name, e)) = names
        .iter()
        .find_map(|n| ServerName::try_from(n.as_str()).err().map(|e| (n, e)))
    {
        return Err(Error::Config(format!(
            "'{}' is neither a host name nor an IP address: {e}",
            name.escape_debug()
        )));
    }
    let made = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| Error::Config(format!("cannot make a certificate: {e}")))?;
    let named = |path: &Path, e: &dyn std::fmt::Display| {
        Error::Config(format!("cannot write {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Config(format!("cannot make the directory {}: {e}", dir.display())))?;
    // Each is a new file renamed into place: a key never lands in a file another user made
    // (a link planted in a shared directory, a file readable by others).
    let write = |path: &Path, text: String, kind| {
        crate::store::replace_file(path, text.as_bytes(), kind).map_err(|e| named(path, &e))
    };
    write(&cert, made.cert.pem(), Kind::Shared)?;
    write(&key, made.signing_key.serialize_pem(), Kind::Private)?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{send_frame, FrameReader};
    use crate::proto::ToServer;

    #[test]
    fn first_bytes_tell_tls_from_frames() {
        let tls: [&[u8]; 3] = [&[0x16, 0x03, 0x01, 0x02], &[0x15, 0x03, 0x03], &[0x16]];
        for first in tls {
            assert_eq!(Speaks::from_first(first), Speaks::Tls, "{first:?}");
        }
        for first in ["{\"cmd\"", "\r\n{", " {"] {
            assert_eq!(
                Speaks::from_first(first.as_bytes()),
                Speaks::Frames,
                "{first}"
            );
        }
        let other: [&[u8]; 3] = [b"", b"GET /", &[0x16, 0x01]];
        for first in other {
            assert_eq!(Speaks::from_first(first), Speaks::Unknown, "{first:?}");
        }
    }

    #[test]
    fn a_generated_certificate_carries_frames_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) =
            generate(&["localhost".into(), "127.0.0.1".into()], dir.path(), false).unwrap();
        let acceptor = Acceptor::load(&cert, &key).unwrap();
        let connector = Connector::load(&cert, "localhost").unwrap();
        smol::block_on(async {
            let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = smol::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let (r, mut w) = acceptor.accept(tcp).await.unwrap();
                let msg: Option<ToServer> = FrameReader::new(r, 1024).read().await.unwrap();
                send_frame(&mut w, &msg).await.unwrap();
            });
            let (r, mut w) = connector
                .connect(TcpStream::connect(addr).await.unwrap())
                .await
                .unwrap();
            send_frame(&mut w, &ToServer::Who).await.unwrap();
            let back: Option<ToServer> = FrameReader::new(r, 1024).read().await.unwrap();
            assert_eq!(back, Some(ToServer::Who));
            server.await;
        });
    }

    #[test]
    fn a_stub_that_does_not_trust_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generate(&["localhost".into()], &dir.path().join("a"), false).unwrap();
        let (other, _) = generate(&["localhost".into()], &dir.path().join("b"), false).unwrap();
        let acceptor = Acceptor::load(&cert, &key).unwrap();
        let stranger = Connector::load(&other, "localhost").unwrap();
        let (err, speaks) = refused(acceptor.clone(), stranger);
        assert!(
            err.starts_with("its certificate is not one tls_ca trusts"),
            "{err}"
        );
        assert_eq!(speaks, Speaks::Tls);
        let misnamed = Connector::load(&cert, "elsewhere").unwrap();
        let (err, _) = refused(acceptor, misnamed);
        assert!(
            err.starts_with("its certificate is not for the name 'elsewhere'"),
            "{err}"
        );
        assert!(Acceptor::load(&dir.path().join("nope.pem"), &key).is_err());
    }

    /// The stub's error and what the server seemed to speak, for a handshake that must fail.
    fn refused(acceptor: Acceptor, connector: Connector) -> (String, Speaks) {
        smol::block_on(async {
            let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = smol::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                acceptor.accept(tcp).await.is_err()
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (err, speaks) = connector.connect(tcp).await.err().expect("refused");
            assert!(server.await);
            (err.to_string(), speaks)
        })
    }
}
