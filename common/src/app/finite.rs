//! Refusing arguments that hold NaN or an infinity, which serde_json prints as `null`: a call
//! would run on another value than the app gave, silently.
//!
//! serde_json offers no way to refuse them, so [`check`] walks the arguments again, printing
//! nothing, and fails at the first such float. Only arguments whose JSON holds `null` need the
//! walk: the common call pays a scan of its text for it.

use serde::ser::{self, Error as _, Serialize};
use serde_json::Error;

/// Whether `json`, printed by serde_json, may hold a NaN or an infinity: they print as null,
/// so only then is the walk worth it.
pub(crate) fn may_hold_one(json: &str) -> bool {
    memchr::memmem::find(json.as_bytes(), b"null").is_some()
}

/// Fails naming the first argument that is or holds NaN or an infinity, if any. `args` is the
/// list of arguments (what prints as a JSON array), else the one argument.
pub(super) fn check(args: &impl Serialize, is_list: bool) -> Result<(), Error> {
    let result = if is_list {
        args.serialize(Finite { depth: 0 })
    } else {
        (args,).serialize(Finite { depth: 0 })
    };
    result.map(|_| ())
}

/// Fails if `value`, one argument, is or holds NaN or an infinity.
pub(crate) fn check_one(value: &impl Serialize) -> Result<(), Error> {
    (value.serialize(Finite { depth: 1 })).map_err(|e| Error::custom(format!("it {e}")))
}

/// Walks a value, failing at a float JSON cannot carry; `depth` 0 is the list of arguments.
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
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str)
    );

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
