//! Refusing values JSON between stubs cannot carry as given: NaN or an infinity, which
//! serde_json prints as `null`, and integers beyond 64 bits, which it prints whole but most
//! readers (serde_json's `Value`, every stub) take as an approximate float. A call would run on,
//! or return, another value than the program gave, silently.
//!
//! serde_json offers no way to refuse them, so [`check`] walks the value again, printing
//! nothing, and fails at the first. Only JSON holding `null` or a run of 19 digits needs the
//! walk: the common call pays a scan of its text for them.

use serde::ser::{self, Error as _, Serialize};
use serde_json::Error;

/// Whether `json`, printed by serde_json, may hold a NaN or an infinity (printed as null) or
/// an integer beyond 64 bits (19 digits or more): only then is the walk worth it.
pub(crate) fn may_hold_one(json: &str) -> bool {
    memchr::memmem::find(json.as_bytes(), b"null").is_some() || has_digit_run(json.as_bytes())
}

/// Whether `text` has 19 ASCII digits in a row: every integer past 64 bits does (-2**63-1 is
/// -9223372036854775809). Each window is read from its end, and moves past the last byte in it
/// that is no digit: most text is passed over 19 bytes at a time.
fn has_digit_run(text: &[u8]) -> bool {
    const RUN: usize = 19;
    let mut end = RUN;
    while end <= text.len() {
        match text[end - RUN..end]
            .iter()
            .rposition(|b| !b.is_ascii_digit())
        {
            None => return true,
            Some(at) => end += at + 1,
        }
    }
    false
}

/// Fails naming the first argument that is or holds a value JSON cannot carry, if any. `args`
/// is the list of arguments (what prints as a JSON array), else the one argument.
pub(super) fn check(args: &impl Serialize, is_list: bool) -> Result<(), Error> {
    let result = if is_list {
        args.serialize(Finite { depth: 0 })
    } else {
        (args,).serialize(Finite { depth: 0 })
    };
    result.map(|_| ())
}

/// Fails if `value`, one argument, is or holds a value JSON cannot carry.
pub(crate) fn check_one(value: &impl Serialize) -> Result<(), Error> {
    (value.serialize(Finite { depth: 1 })).map_err(|e| Error::custom(format!("it {e}")))
}

/// Walks a value, failing at a number JSON cannot carry; `depth` 0 is the list of arguments.
#[derive(Clone, Copy)]
struct Finite {
    depth: u32,
}

/// Walks the items of a list, map or struct at `depth`, the next being item `at`.
struct Items {
    depth: u32,
    at: usize,
}

impl Items {
    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let walked = value.serialize(Finite {
            depth: self.depth + 1,
        });
        self.at += 1;
        match walked {
            // The list of arguments names the argument.
            Err(e) if self.depth == 0 => Err(Error::custom(format!("argument {} {e}", self.at))),
            walked => walked,
        }
    }
}

impl Finite {
    fn float(self, value: f64) -> Result<(), Error> {
        if value.is_finite() {
            return Ok(());
        }
        let is = if self.depth == 1 { "is" } else { "holds" };
        Err(Error::custom(format!(
            "{is} {value}: JSON carries finite numbers only (serde_json would send null)"
        )))
    }

    fn integer(self, value: impl std::fmt::Display, fits: bool) -> Result<(), Error> {
        if fits {
            return Ok(());
        }
        let is = if self.depth == 1 { "is" } else { "holds" };
        Err(Error::custom(format!(
            "{is} {value}: JSON between stubs carries integers from -2**63 to 2**64-1 exactly \
             (a larger one reaches most programs as an approximate float): send it as a string"
        )))
    }

    fn items(self) -> Items {
        Items {
            depth: self.depth,
            at: 0,
        }
    }
}

/// Plain values that need no check.
macro_rules! pass {
    ($($method:ident($type:ty)),*) => {
        $(fn $method(self, _: $type) -> Result<(), Error> { Ok(()) })*
    };
}

impl ser::Serializer for Finite {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Items;
    type SerializeTuple = Items;
    type SerializeTupleStruct = Items;
    type SerializeTupleVariant = Items;
    type SerializeMap = Items;
    type SerializeStruct = Items;
    type SerializeStructVariant = Items;

    pass!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str)
    );

    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.integer(v, i64::try_from(v).is_ok() || u64::try_from(v).is_ok())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.integer(v, u64::try_from(v).is_ok())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.float(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.float(v)
    }
    fn serialize_none(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        // Printed as {"Variant": value}: one level down.
        value.serialize(Finite {
            depth: self.depth + 1,
        })
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Items, Error> {
        Ok(self.items())
    }
    fn serialize_tuple(self, _: usize) -> Result<Items, Error> {
        Ok(self.items())
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Items, Error> {
        Ok(self.items())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Items, Error> {
        Ok(Finite {
            depth: self.depth + 1,
        }
        .items())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Items, Error> {
        Ok(self.items())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Items, Error> {
        Ok(self.items())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Items, Error> {
        Ok(Finite {
            depth: self.depth + 1,
        }
        .items())
    }
}

/// The items of every kind of list and map, walked alike.
macro_rules! items {
    ($($trait:ident::$method:ident),*) => {
        $(impl ser::$trait for Items {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.item(value)
            }
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        })*
    };
}

items!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Items {
    type Ok = ();
    type Error = Error;
    // A float key serde_json already refuses.
    fn serialize_key<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

/// The fields of structs, walked as their values.
macro_rules! fields {
    ($($trait:ident),*) => {
        $(impl ser::$trait for Items {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Result<(), Error> {
                self.item(value)
            }
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        })*
    };
}

fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::has_digit_run;

    #[test]
    fn a_run_of_19_digits_is_found_wherever_it_is() {
        let run = "1234567890123456789";
        for text in [
            run.to_owned(),
            format!("[1,{run}]"),
            format!("{}x{run}", "9".repeat(18)),
        ] {
            assert!(has_digit_run(text.as_bytes()), "{text}");
        }
        let short = &run[1..];
        for text in [
            short.to_owned(),
            format!("{short}x{short}"),
            "a".repeat(100),
        ] {
            assert!(!has_digit_run(text.as_bytes()), "{text}");
        }
    }
}
