//! Any Rust object as a service: register closures under a module name, and they become
//! callable by everyone on the network exactly like a Python module. The provider connects to
//! its local client stub like any app and says `provide`; the stub registers the module (its
//! descriptor built from the registrations) and sends the provider the calls to run.
//!
//! ```no_run
//! use common::provider::Provider;
//! let calc = Provider::new("rustcalc")
//!     .function("add", &["a", "b"], "Adds two integers.", |(a, b): (i64, i64)| Ok(a + b));
//! calc.serve_blocking("127.0.0.1:8765").unwrap(); // until the program ends
//! ```
//!
//! [`Provider::provide`] returns once the stub has accepted the module, for a program that
//! says so before it serves ([`Providing::serve`]). Serving outlives the stub: when the
//! connection ends (the stub stopped, restarted or crashed), the provider says so on stderr and
//! provides the module again as soon as a stub is back on that port.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use smol::future::FutureExt;
use smol::net::TcpStream;

use crate::app::{not_an_app_port, stub_failed, CallError, STUB_CLOSED};
use crate::conn::{FrameReader, DEFAULT_MAX_FRAME};
use crate::error::{ErrorKind, RemoteError};
use crate::module::{FunctionDesc, ModuleDescriptor, Param, ParamKind};
use crate::outbox::Outbox;
use crate::proto::{salvage, Call, Json, Keywords, Reply, ToApp, ToStub};
use crate::readiness::ReadWhenReady;
use crate::Error;

type Handler = Arc<dyn Fn(Vec<Json>, Keywords) -> Result<Json, RemoteError> + Send + Sync>;

/// A module provided by this program.
pub struct Provider {
    desc: ModuleDescriptor,
    handlers: HashMap<String, Handler>,
    /// The largest call read from the stub.
    max_frame: usize,
}

impl Provider {
    /// A module named `module` (an identifier, as for Python modules) with no functions yet.
    pub fn new(module: &str) -> Self {
        Provider {
            desc: ModuleDescriptor {
                module: module.to_owned(),
                functions: Vec::new(),
                attributes: Vec::new(),
            },
            handlers: HashMap::new(),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Sets the largest call read (default: the stubs' default frame limit): the stub's
    /// `max_frame_bytes`, so that every call it sends on can be read.
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Adds function `name(params...)`, replacing one added before under that name. `f` gets
    /// the arguments as `A`, typically a tuple with one element per parameter (`()` for none),
    /// keyword arguments put in their parameter's place as Python would; its `Err` comes back
    /// to the caller as an exception. `name` and `params` are identifiers (as a Python
    /// function's), or the stub refuses the module at [`Provider::provide`], naming the first
    /// that is not.
    pub fn function<A, R, F>(mut self, name: &str, params: &[&str], doc: &str, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(A) -> Result<R, String> + Send + Sync + 'static,
    {
        let bad = |kind, message: String| RemoteError::new(kind, message);
        let names: Vec<String> = params.iter().map(|p| (*p).to_owned()).collect();
        let handler: Handler = Arc::new(move |args, kwargs| {
            let args = bind(&names, args, kwargs)
                .map_err(|message| bad(ErrorKind::BadArguments, message))?;
            // The values' texts as one list, read as `A`: nothing is parsed twice.
            let list = Json::of(&args).map_err(|e| bad(ErrorKind::Exception, e.to_string()))?;
            let args = (list.read())
                .or_else(|e| match args.is_empty() {
                    // No parameters, as `()`, which serde reads from null only.
                    true => serde_json::from_str("null").map_err(|_| e),
                    false => Err(e),
                })
                .map_err(|e| bad(ErrorKind::BadArguments, format!("arguments: {e}")))?;
            let result = f(args).map_err(|message| {
                let mut e = bad(ErrorKind::Exception, message);
                e.exc_type = Some("Error".into());
                e
            })?;
            let refused = |e: serde_json::Error| bad(ErrorKind::Exception, format!("result: {e}"));
            let json = Json::of(&result).map_err(refused)?;
            // Sent as null, the caller would get another value than `f` gave, silently.
            if crate::app::finite::may_hold_one(json.text()) {
                crate::app::finite::check_one(&result).map_err(refused)?;
            }
            Ok(json)
        });
        self.handlers.insert(name.to_owned(), handler);
        // Added again, its header goes too: calls are checked against the code they run.
        self.desc.functions.retain(|f| f.name != name);
        self.desc.functions.push(FunctionDesc {
            name: name.to_owned(),
            params: params
                .iter()
                .map(|p| Param {
                    name: (*p).to_owned(),
                    kind: ParamKind::Positional,
                    default: None,
                    annotation: None,
                })
                .collect(),
            returns: None,
            doc: (!doc.is_empty()).then(|| doc.to_owned()),
            is_async: false,
            wrapped_by: None,
        });
        self
    }

    /// The descriptor the registrations make.
    pub fn descriptor(&self) -> &ModuleDescriptor {
        &self.desc
    }

    /// Provides the module through the stub whose app port is `stub` (`127.0.0.1:8765`), running
    /// calls on blocking threads; see [`Providing::serve`]. Dropping the future stops it.
    ///
    /// # Errors
    /// The stub cannot be reached or refuses the module, at first or when provided again.
    pub async fn serve(self, stub: &str) -> Result<(), CallError> {
        self.provide(stub).await?.serve().await
    }

    /// [`Provider::serve`], blocking.
    pub fn serve_blocking(self, stub: &str) -> Result<(), CallError> {
        smol::block_on(self.serve(stub))
    }

    /// Connects to the stub whose app port is `stub` and provides the module; returns once the
    /// stub has accepted it, so the caller can say so (then [`Providing::serve`]). The stub
    /// answers before the server does: a refusal by the server ends `serve`.
    ///
    /// # Errors
    /// The stub cannot be reached or refuses the module.
    pub async fn provide(self, stub: &str) -> Result<Providing, CallError> {
        let link = self.connect(stub).await.map_err(Failed::into_error)?;
        Ok(Providing {
            provider: self,
            stub: stub.to_owned(),
            link,
        })
    }

    /// A connection to `stub` on which the stub has accepted the module, within
    /// [`ACCEPT_TIMEOUT`].
    async fn connect(&self, stub: &str) -> Result<Link, Failed> {
        self.accepted_by(stub)
            .or(async {
                smol::Timer::after(ACCEPT_TIMEOUT).await;
                Err(Failed::Lost(format!(
                    "the stub at {stub} did not accept the module within {ACCEPT_TIMEOUT:?}"
                )))
            })
            .await
    }

    async fn accepted_by(&self, stub: &str) -> Result<Link, Failed> {
        let stream = TcpStream::connect(stub)
            .await
            .map_err(|e| Failed::Lost(format!("no stub at {stub}: {e}")))?;
        let outbox = Outbox::tcp(&stream);
        let mut link = Link {
            _writer: outbox.spawn_writer(stream.clone()),
            reader: FrameReader::new(crate::readiness::tcp(&stream), self.max_frame),
            outbox,
        };
        let provide = ToStub::Provide {
            id: 0,
            descriptor: self.desc.clone(),
        };
        if !link.outbox.send(&provide) {
            return Err(Failed::Lost(STUB_CLOSED.into()));
        }
        match link.until_reply(self, stub).await {
            Next::Reply(Ok(_md5)) => Ok(link),
            Next::Reply(Err(refused)) => Err(Failed::Refused(refused)),
            Next::Ended(why) => Err(Failed::Lost(why)),
        }
    }

    /// [`Provider::provide`], blocking.
    pub fn provide_blocking(self, stub: &str) -> Result<Providing, CallError> {
        smol::block_on(self.provide(stub))
    }

    /// Runs one call on a blocking thread and sends its answer.
    fn run(&self, call: Call, outbox: Arc<Outbox>) {
        let handler = self.handlers.get(&call.function).cloned();
        smol::spawn(async move {
            let result = match handler {
                Some(h) => smol::unblock(move || caught(|| h(call.args, call.kwargs))).await,
                None => Err(RemoteError::new(
                    ErrorKind::UnknownFunction,
                    format!("no function '{}'", call.function),
                )),
            };
            outbox.send(&ToStub::Answer(Reply {
                id: call.id,
                result,
            }));
        })
        .detach();
    }
}

/// A module its stub has accepted: [`Providing::serve`] runs its calls.
pub struct Providing {
    provider: Provider,
    /// The stub's app address, to provide the module there again when the connection ends.
    stub: String,
    link: Link,
}

impl Providing {
    /// Runs the module's calls on blocking threads. When the connection to the stub ends (the
    /// stub stopped, restarted or crashed), it says so on stderr and provides the module again,
    /// trying every few seconds at most until a stub is back on that port; the calls that were
    /// running then are lost (their callers are told the owner is gone). Dropping the future
    /// stops it.
    ///
    /// # Errors
    /// Only a refusal, which trying again would not change: the server refuses the module
    /// (another stub owns that name; the stub had taken it before it knew), or the stub back on
    /// that port refuses it (it owns a module of that name already).
    pub async fn serve(mut self) -> Result<(), CallError> {
        loop {
            match self.link.until_reply(&self.provider, &self.stub).await {
                Next::Reply(Ok(_)) => {}
                Next::Reply(Err(e)) => return Err(e.into()),
                Next::Ended(why) => self.link = self.provide_again(&why).await?,
            }
        }
    }

    /// [`Providing::serve`], blocking.
    pub fn serve_blocking(self) -> Result<(), CallError> {
        smol::block_on(self.serve())
    }

    /// After the connection ended (`why`): connects and provides the module again, waiting
    /// longer between tries ([`FIRST_RETRY`], doubled up to [`LAST_RETRY`]) while no stub
    /// takes it.
    async fn provide_again(&self, why: &str) -> Result<Link, CallError> {
        // Closed first: a stub still there (one that cut the provider off) lets the module go.
        self.link.outbox.cut();
        let (module, stub) = (&self.provider.desc.module, &self.stub);
        tell(format_args!(
            "provider {module}: lost the stub at {stub} ({why}); connecting again"
        ));
        let mut wait = FIRST_RETRY;
        loop {
            smol::Timer::after(wait).await;
            match self.provider.connect(stub).await {
                Ok(link) => {
                    tell(format_args!(
                        "providing {module} through the stub at {stub} again"
                    ));
                    return Ok(link);
                }
                Err(Failed::Lost(_)) => wait = (wait * 2).min(LAST_RETRY),
                Err(refused) => return Err(refused.into_error()),
            }
        }
    }
}

/// How long a stub may take to accept the module: a port that takes connections and says
/// nothing (another program's, a stopped stub) would hold `provide` forever.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The first wait before providing the module again after the connection ended: a stub that
/// restarts takes a moment to listen again.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// The longest wait between tries to provide the module again.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// One connection to the stub.
struct Link {
    outbox: Arc<Outbox>,
    reader: FrameReader<ReadWhenReady<std::net::TcpStream>>,
    _writer: smol::Task<()>,
}

/// What the stub sent next, besides calls.
enum Next {
    /// Its reply (to `provide`).
    Reply(Result<Json, RemoteError>),
    /// The connection ended, for this reason.
    Ended(String),
}

/// Why the module could not be provided.
enum Failed {
    /// No stub there, or the connection ended first: trying again may work.
    Lost(String),
    /// The stub refused it.
    Refused(RemoteError),
}

impl Failed {
    fn into_error(self) -> CallError {
        match self {
            Failed::Lost(why) => CallError::NotConnected(why),
            Failed::Refused(e) => e.into(),
        }
    }
}

impl Link {
    /// Runs the calls that come until the stub's next reply, which it returns, or the end of
    /// the connection (to `stub`).
    async fn until_reply(&mut self, provider: &Provider, stub: &str) -> Next {
        loop {
            match self.reader.read::<ToApp>().await {
                Ok(Some(ToApp::Call(call))) => provider.run(call, self.outbox.clone()),
                Ok(Some(ToApp::Reply(reply))) => return Next::Reply(reply.result),
                Ok(Some(_)) => {}
                Ok(None) => return Next::Ended(STUB_CLOSED.into()),
                // A call that cannot be read (over `max_frame`, say) fails at once, as the stub
                // fails an app's request; the connection goes on.
                Err(e @ (Error::Json(_) | Error::FrameTooLarge { .. })) => {
                    let head = self.reader.refused_head();
                    if let Some(why) = not_an_app_port(stub, head) {
                        return Next::Ended(why);
                    }
                    if let Some(("call", id)) = salvage(head) {
                        let why = "the providing app cannot read the call: ";
                        let result = Err(RemoteError::refused_frame(&e, why));
                        self.outbox.send(&ToStub::Answer(Reply { id, result }));
                    }
                }
                Err(e) => return Next::Ended(stub_failed(e)),
            }
        }
    }
}

impl Drop for Link {
    /// The connection closes now, though calls still running hold its outbox: their answers
    /// have nowhere to go, and the stub sees the provider leave at once.
    fn drop(&mut self) {
        self.outbox.cut();
    }
}

/// Says one line on stderr, as a program would; never panics (stderr may be closed).
fn tell(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs a handler; one that panics fails its call with the panic's message (a `panic`
/// exception) rather than leave it unanswered until its caller's timeout.
fn caught(run: impl FnOnce() -> Result<Json, RemoteError>) -> Result<Json, RemoteError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|panic| {
        let message = match panic.downcast::<String>() {
            Ok(message) => *message,
            Err(panic) => panic
                .downcast_ref::<&str>()
                .unwrap_or(&"(no message)")
                .to_string(),
        };
        let mut e = RemoteError::new(ErrorKind::Exception, message);
        e.exc_type = Some("panic".into());
        Err(e)
    })
}

/// The arguments in parameter order: each keyword argument put in its parameter's place after
/// the positional ones, and refused as Python would refuse it (unknown, given twice, or a
/// parameter left without a value).
fn bind<V>(
    names: &[String],
    args: Vec<V>,
    kwargs: indexmap::IndexMap<String, V>,
) -> Result<Vec<V>, String> {
    if kwargs.is_empty() {
        return Ok(args);
    }
    if args.len() > names.len() {
        return Err(format!(
            "takes {} argument(s) but {} were given",
            names.len(),
            args.len() + kwargs.len()
        ));
    }
    let mut slots: Vec<Option<V>> = args.into_iter().map(Some).collect();
    slots.resize_with(names.len(), || None);
    for (name, value) in kwargs {
        let at = names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| format!("unexpected keyword argument '{name}'"))?;
        if slots[at].replace(value).is_some() {
            return Err(format!("got multiple values for argument '{name}'"));
        }
    }
    slots
        .into_iter()
        .zip(names)
        .map(|(value, name)| value.ok_or_else(|| format!("missing argument '{name}'")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn bound(args: Value, kwargs: Value) -> Result<Value, String> {
        let names = ["a".to_owned(), "b".to_owned()];
        let (Value::Array(args), Value::Object(kwargs)) = (args, kwargs) else {
            unreachable!()
        };
        bind(&names, args, kwargs.into_iter().collect()).map(Value::Array)
    }

    #[test]
    fn keyword_arguments_take_their_parameters_place() {
        assert_eq!(bound(json!([1, 2]), json!({})), Ok(json!([1, 2])));
        assert_eq!(bound(json!([1]), json!({"b": 2})), Ok(json!([1, 2])));
        assert_eq!(bound(json!([]), json!({"b": 2, "a": 1})), Ok(json!([1, 2])));
    }

    #[test]
    fn a_function_without_parameters_takes_them_as_unit_or_as_an_empty_tuple() {
        let provider = Provider::new("p")
            .function("unit", &[], "", |(): ()| Ok(1))
            .function("tuple", &[], "", |_: [i64; 0]| Ok(2));
        for (name, result) in [("unit", "1"), ("tuple", "2")] {
            let answer = provider.handlers[name](Vec::new(), Keywords::new());
            assert_eq!(answer.map(|r| r.text().to_owned()), Ok(result.into()));
        }
    }

    /// A result that holds NaN or an infinity fails its call, as a Python module's does:
    /// serde_json would send it as null. A real null goes through.
    #[test]
    fn a_result_holding_nan_fails_its_call() {
        let provider = Provider::new("p")
            .function("nan", &[], "", |(): ()| Ok(vec![Some(1.0), Some(f64::NAN)]))
            .function("null", &[], "", |(): ()| Ok(vec![Some(1.0), None]));
        let call = |name: &str| provider.handlers[name](Vec::new(), Keywords::new());
        let e = call("nan").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Exception);
        assert!(e.message.starts_with("result: it holds NaN: "), "{e:?}");
        assert_eq!(
            call("null").map(|r| r.text().to_owned()),
            Ok("[1.0,null]".into())
        );
    }

    /// As a Python module's: a caller reading `Value` would get an approximate float.
    #[test]
    fn a_result_holding_an_integer_beyond_64_bits_fails_its_call() {
        let provider = Provider::new("p")
            .function("wide", &[], "", |(): ()| Ok(vec![u64::MAX as u128 + 1]))
            .function("max", &[], "", |(): ()| Ok(vec![u64::MAX as u128]));
        let call = |name: &str| provider.handlers[name](Vec::new(), Keywords::new());
        let e = call("wide").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Exception);
        let told = "result: it holds 18446744073709551616: JSON between stubs carries integers";
        assert!(e.message.starts_with(told), "{e:?}");
        let max = call("max").map(|r| r.text().to_owned());
        assert_eq!(max, Ok("[18446744073709551615]".into()));
    }

    #[test]
    fn a_function_added_again_replaces_its_header_as_well_as_its_code() {
        let provider = Provider::new("p")
            .function("f", &["a"], "first", |(a,): (i64,)| Ok(a))
            .function("f", &["a", "b"], "second", |(a, b): (i64, i64)| Ok(a + b));
        let functions = &provider.descriptor().functions;
        assert_eq!(functions.len(), 1, "{functions:?}");
        assert_eq!(functions[0].params.len(), 2);
        assert_eq!(functions[0].doc.as_deref(), Some("second"));
    }

    /// A port that takes the connection and never answers (the kernel's backlog accepts it):
    /// `provide` gave no answer, ever.
    #[test]
    fn a_stub_that_never_accepts_the_module_is_given_up_on() {
        let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = mute.local_addr().unwrap().to_string();
        let Err(e) = Provider::new("p").provide_blocking(&addr) else {
            panic!("provided through a mute port")
        };
        let told = format!("the stub at {addr} did not accept the module within 10s");
        assert_eq!(e, CallError::NotConnected(told));
    }

    #[test]
    fn keyword_arguments_are_refused_as_python_would() {
        let err = |args, kwargs| bound(args, kwargs).unwrap_err();
        assert_eq!(
            err(json!([]), json!({"c": 1})),
            "unexpected keyword argument 'c'"
        );
        assert_eq!(
            err(json!([1]), json!({"a": 1})),
            "got multiple values for argument 'a'"
        );
        assert_eq!(err(json!([]), json!({"a": 1})), "missing argument 'b'");
        assert_eq!(
            err(json!([1, 2, 3]), json!({"a": 1})),
            "takes 2 argument(s) but 4 were given"
        );
    }
}
