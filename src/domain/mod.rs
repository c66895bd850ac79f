//! The vocabulary every other module speaks: what a call outcome is, how it is
//! classified, what the handling decision says, the destination key and the tenant.
//!
//! A leaf: it imports nothing of the crate, and nothing here does I/O, knows a wire
//! format (tonic, HTTP, JSON envelopes of providers) or holds a rule of classification
//! or policy. Those live above it (`sip`, `providers`, `classify`, `policy`) and import
//! from here, never the other way round.

// Before the modules that use it: a macro is visible below its definition only.
/// Declares a closed vocabulary enum with its snake_case names (serde, `Display`,
/// `FromStr`, `ALL`), for the classification's and the decision's vocabularies alike.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The reference's lower-case name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::domain::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::domain::UnknownName {
                        kind: stringify!($name),
                        name: s.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

mod decision;
pub mod destination;
mod outcome;
mod tenant;
mod vocabulary;

pub use decision::*;
pub use outcome::{HistoryEntry, HistorySnapshot, Outcome};
pub use tenant::{DEFAULT_MAX_TENANT_BYTES, Tenant, TenantError};
pub use vocabulary::*;
