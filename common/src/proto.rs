//! The wire protocol: every message any stub or app sends, defined once.
//!
//! # Format
//! One JSON envelope per line: `{"cmd": "<snake_case variant>", "data": <payload>}` (unit variants
//! have no `data`). Framing and size limits live in `conn`. Three links, one enum per direction:
//! client stub → server ([`ToServer`]), server → client stub ([`ToClient`]),
//! app → its local stub ([`ToStub`]) and back ([`ToApp`]).

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::RemoteError;
use crate::log::printable;

/// Version said in [`Hello`]; a server refuses any other.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest network token, in bytes (see [`MAX_HELLO_BYTES`]).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Largest first frame (the [`Hello`]) a server reads: it reads it before it knows whether the
/// peer holds the token, so a connection that never proves it can make it hold no more than
/// this. Room for a token of [`MAX_TOKEN_BYTES`] escaped at its widest (`\u0001`: 6 bytes).
pub const MAX_HELLO_BYTES: usize = 32 * 1024;

/// Most ids in one `cancel` frame ([`ToServer::Cancel`], [`ToClient::Cancel`]): at their
/// widest (20 digits) they fit the smallest frame a profile may set.
pub const CANCEL_IDS: usize = 100;

/// Client stub → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "data", rename_all = "snake_case")]
pub enum ToServer {
    /// First frame on a connection.
    Hello(Hello),
    /// One piece of a descriptor this stub registers (it becomes the module's owner).
    Chunk(Chunk),
    /// Stop offering a module this stub owns.
    Withdraw { module: String },
    /// Every module this stub owns, sent after its uploads on each connection: any other module
    /// the server has it owning (its ghost's, when a stub restarted on the same receiving
    /// directory reclaims the name) leaves the network, as if withdrawn.
    Owns { modules: Vec<String> },
    /// Answer to an [`ToClient::Offer`]: the cached copy matches, send nothing.
    Have { module: String, md5: String },
    /// Answer to an [`ToClient::Offer`]: send the chunks.
    Want { module: String, md5: String },
    /// A text message for the server's console.
    Say { text: String },
    /// Ask who is in; answered by [`ToClient::Who`].
    Who,
    /// A call on a module owned by another stub.
    Call(Call),
    /// The answer to a [`ToClient::Call`] this stub ran as owner.
    Reply(Reply),
    /// Calls this stub made (by its ids) that nobody waits for any more (the app that made them
    /// left): the server forgets them, tells their owners ([`ToClient::Cancel`]), and answers
    /// none of them.
    Cancel { ids: Vec<u64> },
    /// Liveness: sent every heartbeat interval; any frame proves the stub is there.
    Ping,
    /// Ask the server how it sees this stub; answered by [`ToClient::Echo`] (for `ping`).
    Echo { id: u64 },
}

/// Server → client stub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "data", rename_all = "snake_case")]
pub enum ToClient {
    /// Hello accepted, under this name. The stub sends something (at least a `ping`) every
    /// `heartbeat_ms`; a side that hears nothing for three intervals treats the other as gone.
    Welcome {
        name: String,
        version: u32,
        heartbeat_ms: u64,
        /// The modules that left the network since the server started and are not back (the
        /// newest 100): a copy the stub cached of one is removed, for it left while the stub
        /// was away.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        left: Vec<String>,
    },
    /// Hello refused; the server closes the connection after this.
    Refused {
        reason: String,
        /// The name is in use: the same stub may try another name.
        #[serde(default)]
        name_taken: bool,
    },
    /// An uploaded descriptor was verified and stored.
    Registered { module: String, md5: String },
    /// An upload or a withdraw was refused.
    RegisterFailed { module: String, reason: String },
    /// A module exists on the network; answer with `Have` or `Want`.
    Offer(Offer),
    /// One piece of a descriptor this stub asked for.
    Chunk(Chunk),
    /// A module is no longer on the network.
    Gone { module: String, reason: String },
    /// A text message from the server console or another stub.
    Message { from: String, text: String },
    /// Who is in.
    Who { peers: Vec<PeerInfo> },
    /// Run a call on a module this stub owns; answer with a [`ToServer::Reply`] of the same id.
    Call(Call),
    /// The answer to a [`ToServer::Call`] this stub made.
    Reply(Reply),
    /// Calls sent to this stub as owner (by their route ids) that nobody waits for any more
    /// (their caller left, or their timeout passed at the server): one still queued is dropped
    /// without running; one running finishes, and its answer is dropped by the server.
    Cancel { ids: Vec<u64> },
    /// A frame this stub sent could not be handled; the connection goes on.
    Error { message: String },
    /// The server is ending the session; the stub should exit.
    Shutdown { reason: String },
    /// Liveness, as [`ToServer::Ping`].
    Ping,
    /// The answer to [`ToServer::Echo`]: the stub's address as the server sees it.
    Echo { id: u64, address: String },
}

/// App → its local client stub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "data", rename_all = "snake_case")]
pub enum ToStub {
    Call(Call),
    /// List modules whose names start with `prefix`; the reply is a list of names.
    Modules {
        id: u64,
        prefix: String,
    },
    /// A module's descriptor; the reply is the descriptor.
    Describe {
        id: u64,
        module: String,
    },
    /// The reply is `{"address": ADDRESS, "rtt_ms": MS}`: this stub's address as the server
    /// sees it, and the round trip to the server.
    Ping {
        id: u64,
    },
    /// The reply is `{"made": [ROW...], "served": [ROW...]}`: the calls this stub made for apps
    /// and the calls it ran as owner, per function (calls, errors, last_error, mean_ms, p99_ms).
    Stats {
        id: u64,
    },
    /// Reload a module this stub owns from its file now; the reply is its new md5.
    Reload {
        id: u64,
        module: String,
    },
    /// This app provides module `descriptor.module` itself, for as long as it stays connected:
    /// the stub registers it and sends the app its calls ([`ToApp::Call`]). The reply is the
    /// descriptor's md5, once the stub has taken it; if the server then refuses it, a second
    /// reply under this id, whenever that is, says why: the module is not provided as sent.
    Provide {
        id: u64,
        descriptor: crate::module::ModuleDescriptor,
    },
    /// The providing app's answer to a [`ToApp::Call`] with the same id.
    Answer(Reply),
}

/// Local client stub → app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "data", rename_all = "snake_case")]
pub enum ToApp {
    Reply(Reply),
    /// Run a call on a module this app provides; answer with [`ToStub::Answer`].
    Call(Call),
    /// A frame from the app could not be handled (it carried no usable id).
    Error {
        message: String,
    },
}

/// The first frame a client stub sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A random id the stub keeps for its lifetime: a stub that reconnects with the same session
    /// reclaims its name from its own ghost (a connection the server has not yet seen die).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// A module on offer: its owner and the md5 of its descriptor bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub module: String,
    pub owner: String,
    pub md5: String,
    /// Size of the descriptor in bytes.
    pub size: u64,
}

/// One piece of a descriptor file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub module: String,
    /// md5 (hex) of the whole file, checked once every piece is in.
    pub md5: String,
    /// Size of the whole file in bytes.
    pub size: u64,
    /// 0-based sequence number; pieces arrive in order.
    pub seq: u32,
    /// How many pieces make the file (at least 1).
    pub total: u32,
    /// This piece's bytes, base64 (standard alphabet, padded).
    pub data: String,
    /// Uploads only: the owner declares the module shareable, so other stubs registering the
    /// same headers as shared become owners too, and calls are spread among them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// A call's keyword arguments, in the order the caller gave them: Python keeps that order
/// (`**kwargs` sees it), so a module sees what it would see if called in-process.
pub type Keywords = indexmap::IndexMap<String, Json>;

/// A function call. Ids are chosen by the sender and unique among its calls in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub id: u64,
    pub module: String,
    pub function: String,
    #[serde(default)]
    pub args: Vec<Json>,
    #[serde(default, skip_serializing_if = "Keywords::is_empty")]
    pub kwargs: Keywords,
    /// How long the caller still waits, in milliseconds: a duration, never a clock time.
    pub timeout_ms: u64,
    /// Who made the call, as the server forwards it to the owner: a number the server gives
    /// each stub's connection, by which the owner lets callers take turns. The server sets it,
    /// whatever the stub sent; stubs ignore it in what apps send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<u64>,
}

/// The one answer to a call (or a `Modules`/`Describe` request) with the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: u64,
    #[serde(deserialize_with = "outcome")]
    pub result: Result<Json, RemoteError>,
}

/// Reads a [`Reply`]'s result, `{"Ok": VALUE}` or `{"Err": ERROR}`, as serde would, but refuses
/// anything else saying so: serde_json's answer to an enum given a number, or a map of no key or
/// two, is "expected value", which an app that wrote `"result": 3` could make nothing of.
fn outcome<'de, D: Deserializer<'de>>(d: D) -> Result<Result<Json, RemoteError>, D::Error> {
    #[derive(Deserialize)]
    enum Key {
        Ok,
        Err,
    }
    struct Outcome;
    impl<'de> Visitor<'de> for Outcome {
        type Value = Result<Json, RemoteError>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(r#"a result, {"Ok": VALUE} or {"Err": ERROR}"#)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let result = match map.next_key()? {
                Some(Key::Ok) => Ok(map.next_value()?),
                Some(Key::Err) => Err(map.next_value()?),
                None => return Err(de::Error::invalid_length(0, &self)),
            };
            match map.next_key::<Key>()? {
                None => Ok(result),
                Some(_) => Err(de::Error::invalid_length(2, &self)),
            }
        }
    }
    d.deserialize_map(Outcome)
}

/// Reads a `T` named by a string (an enum's variant, say), but refuses any other value saying
/// what the key must hold (`expecting`): serde_json's answer to an enum given a number is
/// "expected value", which names neither the key nor what it takes.
pub(crate) fn named<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    struct Named<T>(&'static str, std::marker::PhantomData<T>);
    impl<T: DeserializeOwned> Visitor<'_> for Named<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.0)
        }

        fn visit_str<E: de::Error>(self, name: &str) -> Result<T, E> {
            T::deserialize(de::value::StrDeserializer::new(name))
        }
    }
    d.deserialize_str(Named(expecting, std::marker::PhantomData))
}

/// A value of a call's arguments or result, kept as its JSON text: checked to be JSON where a
/// frame is read, never parsed into a tree nor printed again by the stubs it passes through (an
/// argument of 10,000 numbers costs each hop a scan, not a parse and a print). It reads as one
/// only in the app and in the module that runs the call.
///
/// Read from inside a frame, it needs the frame's `cmd` before its `data` (as every sender
/// writes them; serde buffers the other order, which it cannot keep as text): a frame written
/// the other way round is read again, turned round by [`cmd_first`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Json(Box<RawValue>);

impl Json {
    /// `value` as JSON text.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Json> {
        serde_json::value::to_raw_value(value).map(Json)
    }

    /// The value `text` holds, checked to be JSON.
    pub fn parse(text: String) -> serde_json::Result<Json> {
        RawValue::from_string(text).map(Json)
    }

    /// Reads the value as a `T`.
    pub fn read<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }

    /// Its JSON text, as it came (whitespace included).
    pub fn text(&self) -> &str {
        self.0.get()
    }
}

impl From<Value> for Json {
    fn from(value: Value) -> Json {
        Json::of(&value).expect("a Value is always JSON")
    }
}

/// Same text, same value: what a test compares, since every stub forwards the text as it came.
impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.text() == other.text()
    }
}

/// The longest name a stub may go by, in bytes.
pub const MAX_STUB_NAME_BYTES: usize = 64;

/// Whether `name` is one a stub may go by: 1 to [`MAX_STUB_NAME_BYTES`] bytes, no `:` (which
/// separates a shell command from its argument), no control character, and no space at either
/// end (the shells trim their arguments: `kick: a` is `kick:a`).
pub fn valid_stub_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STUB_NAME_BYTES
        && name.trim() == name
        && !name.chars().any(|c| c.is_control() || c == ':')
}

/// One stub as listed by `wii`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    pub address: String,
    pub modules: Vec<String>,
}

/// The `wii` table, as both shells print it. A stub reads it from the server: what it holds is
/// escaped (see [`printable`]).
pub fn render_who(peers: &[PeerInfo]) -> String {
    if peers.is_empty() {
        return "no stubs are connected\n".into();
    }
    let mut out = format!("{} stub(s):\n", peers.len());
    for p in peers {
        let modules = match p.modules.is_empty() {
            true => "-".to_owned(),
            false => p.modules.join(", "),
        };
        let (name, address, modules) = (
            printable(&p.name),
            printable(&p.address),
            printable(&modules),
        );
        out += &format!("  {name:<16} {address:<22} modules: {modules}\n");
    }
    out
}

/// The command and request id of a frame that could not be read (malformed, or over the size
/// limit), made out from its start when it begins as every sender writes it:
/// `{"cmd": "NAME", "data": {"id": N, ...`. It lets the receiver answer that request at once
/// instead of leaving its caller to wait for a timeout.
pub fn salvage(head: &[u8]) -> Option<(&str, u64)> {
    let mut at = Cursor(head);
    let cmd = at.command()?;
    for token in [",", "\"data\"", ":", "{", "\"id\"", ":"] {
        at.expect(token)?;
    }
    Some((cmd, at.number()?))
}

/// The command of a frame that could not be read, made out from its start as [`salvage`] does.
pub fn command(head: &[u8]) -> Option<&str> {
    Cursor(head).command()
}

/// `frame` written again with `cmd` before `data`, when it has both and does not start with
/// `cmd`; else `None`. Serde reads `data` before `cmd` only by buffering it, and a [`Json`]
/// cannot be read from that buffer; so the frame readers read such a frame again as this turns
/// it (only after a failed read: a frame written as senders write it still costs one parse).
/// The parts keep their text; other keys, which serde ignores, are dropped.
///
/// # Errors
/// The frame's envelope cannot be read (a key repeated, `cmd` missing or not a string, not
/// JSON): that says what is wrong, where serde's failed read of the whole says "expected value"
/// of a `cmd` not a string, or speaks of the `data` it buffered.
pub fn cmd_first(frame: &[u8]) -> serde_json::Result<Option<Vec<u8>>> {
    #[derive(Serialize, Deserialize)]
    #[serde(expecting = r#"a frame, {"cmd": NAME, "data": VALUE}"#)]
    struct Envelope<'a> {
        #[serde(deserialize_with = "cmd_name")]
        cmd: String,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    fn cmd_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        named(d, r#"`cmd` to be a string naming the message, like "call""#)
    }
    // Started as senders write it, `cmd` first and a string: the failed read said what is wrong.
    let mut at = Cursor(frame);
    let as_sent = ["{", "\"cmd\"", ":", "\""]
        .iter()
        .all(|t| at.expect(t).is_some());
    if as_sent {
        return Ok(None);
    }
    let envelope: Envelope = serde_json::from_slice(frame)?;
    match envelope.data {
        Some(_) => serde_json::to_vec(&envelope).map(Some),
        None => Ok(None),
    }
}

/// Reads the few tokens [`salvage`], [`command`] and [`cmd_first`] look for.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn skip_space(&mut self) {
        let start = self
            .0
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        self.0 = &self.0[start..];
    }

    fn expect(&mut self, token: &str) -> Option<()> {
        self.skip_space();
        self.0 = self.0.strip_prefix(token.as_bytes())?;
        Some(())
    }

    /// A frame's start up to its command's name, which it returns: `{"cmd": "NAME"`.
    fn command(&mut self) -> Option<&'a str> {
        self.expect("{")?;
        self.expect("\"cmd\"")?;
        self.expect(":")?;
        self.name()
    }

    /// A quoted command name (lower case and `_`, as every command is).
    fn name(&mut self) -> Option<&'a str> {
        self.expect("\"")?;
        let len = self.0.iter().position(|&b| b == b'"')?;
        let (name, rest) = self.0.split_at(len);
        if !name.iter().all(|&b| b.is_ascii_lowercase() || b == b'_') {
            return None;
        }
        self.0 = &rest[1..];
        std::str::from_utf8(name).ok()
    }

    /// An unsigned integer token as JSON writes one (no leading zero), ended by what may end a
    /// value in a map: `1.5`, `1e3` or `12abc` is no id (their leading digits would name another
    /// request), and digits at the end of the head may have been cut short.
    fn number(&mut self) -> Option<u64> {
        self.skip_space();
        let len = self.0.iter().position(|b| !b.is_ascii_digit())?;
        let (digits, after) = self.0.split_at(len);
        let ended = matches!(after[0], b',' | b'}') || after[0].is_ascii_whitespace();
        if !ended || (len > 1 && digits[0] == b'0') {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_names_and_the_who_table_a_server_sends_cannot_forge_lines() {
        for good in ["a", "lab-pc 2", "日本", &"x".repeat(64)] {
            assert!(valid_stub_name(good), "{good}");
        }
        for bad in [
            "",
            "a:b",
            "a\nb",
            "a\x1b[2J",
            &"x".repeat(65),
            " a",
            "a ",
            "\u{3000}",
        ] {
            assert!(!valid_stub_name(bad), "{bad}");
        }
        let forged = PeerInfo {
            name: "a\n[server] bob left".into(),
            address: "1.2.3.4:5\r".into(),
            modules: vec!["m\u{202e}".into()],
        };
        let table = render_who(&[forged]);
        assert_eq!(table.lines().count(), 2, "{table}");
        assert!(table.contains(r"a\n[server] bob left"), "{table}");
        assert!(
            table.contains(r"1.2.3.4:5\r") && table.contains(r"m\u{202e}"),
            "{table}"
        );
    }

    #[test]
    fn a_refused_frame_gives_its_command_even_without_an_id() {
        let refused = r#"{"cmd":"refused","data":{"reason":"the first frame must be hello"#;
        assert_eq!(command(refused.as_bytes()), Some("refused"));
        assert_eq!(command(br#"{"data":{},"cmd":"refused"}"#), None);
        assert_eq!(command(b"HTTP/1.1 400 Bad Request"), None);
    }

    #[test]
    fn a_refused_frame_gives_its_command_and_id_when_it_starts_as_senders_write_it() {
        fn frame(s: &str) -> Option<(&str, u64)> {
            salvage(s.as_bytes())
        }
        assert_eq!(
            frame(r#"{"cmd":"call","data":{"id":42,"module":"z","args":["\ud800"]"#),
            Some(("call", 42))
        );
        assert_eq!(
            frame("{ \"cmd\": \"answer\", \"data\": {\"id\": 7, \"result"),
            Some(("answer", 7))
        );
        assert_eq!(
            frame(r#"{"cmd":"ping","data":{"id":0}}"#),
            Some(("ping", 0))
        );
        assert_eq!(
            frame("{\"cmd\":\"call\",\"data\":{\"id\":5\n,"),
            Some(("call", 5))
        );
        for refused in [
            r#"{"cmd":"call","data":{"id":42"#, // cut short: maybe 421
            r#"{"cmd":"call","data":{"module":"z","id":42,"#,
            r#"{"data":{"id":42},"cmd":"call"}"#,
            r#"{"cmd":"c\"all","data":{"id":42}}"#,
            r#"{"cmd":"call","data":{"id":-1}}"#,
            r#"{"cmd":"call","data":{"id":99999999999999999999}}"#,
            // Not a whole integer: its leading digits would answer another request.
            r#"{"cmd":"call","data":{"id":1.5,"module":"z"}}"#,
            r#"{"cmd":"call","data":{"id":1e3,"module":"z"}}"#,
            r#"{"cmd":"call","data":{"id":12abc,"module":"z"}}"#,
            r#"{"cmd":"call","data":{"id":01,"module":"z"}}"#,
            "",
        ] {
            assert_eq!(frame(refused), None, "{refused}");
        }
    }

    #[test]
    fn a_frame_is_turned_cmd_first_only_when_it_has_data_before_cmd() {
        fn turned(frame: &str) -> serde_json::Result<Option<String>> {
            cmd_first(frame.as_bytes()).map(|f| f.map(|f| String::from_utf8(f).unwrap()))
        }
        // Its parts keep their text; keys serde ignores are dropped.
        assert_eq!(
            turned(r#" {"x":0, "data": {"id":1, "args":[1 ,2]} ,"cmd":"call"} "#).unwrap(),
            Some(r#"{"cmd":"call","data":{"id":1, "args":[1 ,2]}}"#.into())
        );
        for unchanged in [
            r#"{"cmd":"call","data":{"id":1}}"#,
            r#" { "cmd" : "call", "data": 1, "data": 2}"#,
            r#"{"x":1,"cmd":"who"}"#,
        ] {
            assert_eq!(turned(unchanged).unwrap(), None, "{unchanged}");
        }
        // An envelope that cannot be read is refused saying why.
        for (refused, why) in [
            (r#"{"data":{"id":1}}"#, "missing field `cmd`"),
            (
                r#"{"data":1,"cmd":"who","data":2}"#,
                "duplicate field `data`",
            ),
            (r#"{"data":{"id":1},"cmd":"call""#, "EOF"),
            ("garbage", "expected value"),
            ("3", r#"expected a frame, {"cmd": NAME, "data": VALUE}"#),
        ] {
            let e = turned(refused).unwrap_err().to_string();
            assert!(e.contains(why), "{refused}: {e}");
        }
    }

    /// The Python helper (codegen/stubnet.py) reads a line a stub sends it by how it begins:
    /// `cmd` first, and a reply's `id` first in its `data`, serde_json's compact form. It finds
    /// the call whose result it cannot decode (nested too deeply for its Python) by that id.
    #[test]
    fn a_line_to_an_app_begins_as_the_python_helper_reads_it() {
        let mut line = Vec::new();
        let result = Ok(Json::parse("[[1]]".into()).unwrap());
        crate::conn::put_line(&mut line, &ToApp::Reply(Reply { id: 7, result })).unwrap();
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.starts_with(r#"{"cmd":"reply","data":{"id":7,"#),
            "{line}"
        );
        let mut line = Vec::new();
        let error = ToApp::Error {
            message: "m".into(),
        };
        crate::conn::put_line(&mut line, &error).unwrap();
        assert!(line.starts_with(br#"{"cmd":""#), "{line:?}");
    }

    #[test]
    fn a_result_neither_ok_nor_err_is_refused_saying_what_it_must_be() {
        let reply = |result: &str| {
            serde_json::from_str::<Reply>(&format!(r#"{{"id":1,"result":{result}}}"#))
        };
        let ok = reply(r#"{"Ok": [1]}"#).unwrap().result;
        assert_eq!(ok, Ok(Json::parse("[1]".into()).unwrap()));
        let err = reply(r#"{"Err":{"kind":"timeout","message":"late"}}"#).unwrap();
        assert_eq!(err.result.unwrap_err().message, "late");
        // serde_json alone says "expected value" of each.
        for bad in ["3", r#""Ok""#, "null", "{}", r#"{"Ok":1,"Err":2}"#] {
            let e = reply(bad).unwrap_err().to_string();
            assert!(
                e.contains(r#"{"Ok": VALUE} or {"Err": ERROR}"#),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn an_error_kind_not_a_string_is_refused_saying_what_it_must_be() {
        let reply = |kind: &str| {
            let err = format!(r#"{{"kind":{kind},"message":"late"}}"#);
            serde_json::from_str::<Reply>(&format!(r#"{{"id":1,"result":{{"Err":{err}}}}}"#))
        };
        let late = reply(r#""timeout""#).unwrap().result.unwrap_err();
        assert_eq!(late.kind, crate::error::ErrorKind::Timeout);
        let e = reply(r#""late""#).unwrap_err().to_string();
        assert!(e.contains("unknown variant `late`"), "{e}");
        // serde_json alone says "expected value" of each.
        let must = r#"expected `kind` to be a string naming the error, like "timeout""#;
        for (bad, got) in [("3", "integer `3`"), ("null", "null"), ("{}", "map")] {
            let e = reply(bad).unwrap_err().to_string();
            let said = format!("invalid type: {got}, {must}");
            assert!(e.contains(&said), "{bad}: {e}");
        }
    }

    #[test]
    fn envelope_shape_is_cmd_and_data() {
        let hello = ToServer::Hello(Hello {
            version: 1,
            name: "a".into(),
            token: None,
            session: None,
        });
        let json = serde_json::to_string(&hello).unwrap();
        assert_eq!(json, r#"{"cmd":"hello","data":{"version":1,"name":"a"}}"#);
        assert_eq!(
            serde_json::to_string(&ToServer::Who).unwrap(),
            r#"{"cmd":"who"}"#
        );
        let back: ToServer = serde_json::from_str(r#"{"cmd":"who"}"#).unwrap();
        assert_eq!(back, ToServer::Who);
    }

    #[test]
    fn unknown_command_is_an_error_naming_it() {
        let err = serde_json::from_str::<ToServer>(r#"{"cmd":"nope","data":1}"#).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
