//! Typed ids. A sandbox's id, the engine's reference to it, a snapshot's, an image's
//! and a job's are all strings on the wire and on disk (serialized as plain strings),
//! but distinct types in the code: one cannot be passed where another is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id `text` spells (a lookup decides whether it names anything).
            pub fn new(text: impl Into<String>) -> Self {
                Self(text.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether the id is empty (a value not yet given one).
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self(text)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self(text.to_owned())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A sandbox's id (`container_id` in the API).
    SandboxId
);
id_type!(
    /// The engine's reference to a sandbox (a container id, a pod name).
    EngineId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_strings_on_the_wire() {
        let id = SandboxId::new("abc123");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"abc123\"");
        let back: SandboxId = serde_json::from_str("\"abc123\"").unwrap();
        assert_eq!(back, id);
        assert_eq!(id, "abc123");
        assert_eq!(id.to_string(), "abc123");
    }
}
