//! The one rule for exit statuses: a failure is the user's input (exit status 2: a bad flag, file
//! or value, fixed by changing the command or its inputs) or the machine's (1: a full disk, a
//! camera that never opens, a unit that does not answer).
//!
//! Every library error type implements [`Blame`] and registers itself with [`blame_errors!`];
//! a binary asks [`exit_status`] about its error's chain of causes and gets the verdict of the
//! first cause any library recognises — no binary lists the libraries' error types. Errors a
//! binary finds itself (a flag value out of range) are [`Usage`].

use std::error::Error as StdError;

/// Whether an error is the user's input.
pub trait Blame {
    /// True when the user's input is at fault (exit status 2), false for a failure of the
    /// machine (1).
    fn is_input_error(&self) -> bool;
}

/// A registered error type's verdict on one cause (`None`: not this type).
#[doc(hidden)]
pub struct Judge(pub fn(&(dyn StdError + 'static)) -> Option<bool>);

inventory::collect!(Judge);

#[doc(hidden)]
pub use inventory;

/// Registers error types for [`exit_status`]: `trident_core::blame_errors!(Error);` beside the
/// type's [`Blame`] implementation.
#[macro_export]
macro_rules! blame_errors {
    ($($t:ty),+ $(,)?) => {
        $(
            $crate::blame::inventory::submit! {
                $crate::blame::Judge(|e| {
                    e.downcast_ref::<$t>()
                        .map(|x| <$t as $crate::blame::Blame>::is_input_error(x))
                })
            }
        )+
    };
}

/// Bad usage a binary finds itself (a flag value out of range, options that cannot go together):
/// always the user's input.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

impl Blame for Usage {
    fn is_input_error(&self) -> bool {
        true
    }
}

impl Blame for crate::Error {
    fn is_input_error(&self) -> bool {
        crate::Error::is_input_error(self)
    }
}

blame_errors!(Usage, crate::Error);

/// 2 when the first cause in `chain` that a registered error type recognises is an input error,
/// else 1 (also when none is recognised).
pub fn exit_status<'a>(chain: impl IntoIterator<Item = &'a (dyn StdError + 'static)>) -> u8 {
    for cause in chain {
        for judge in inventory::iter::<Judge> {
            if let Some(input) = (judge.0)(cause) {
                return if input { 2 } else { 1 };
            }
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] crate::Error);

    #[test]
    fn the_first_recognised_cause_decides() {
        let input = crate::Error::invalid("x.yaml", "bad");
        let machine = crate::Error::io("cannot write", "/full", std::io::Error::other("ENOSPC"));
        assert_eq!(exit_status([&input as &(dyn StdError + 'static)]), 2);
        assert_eq!(exit_status([&machine as &(dyn StdError + 'static)]), 1);
        // A cause nobody registered is skipped; its source decides.
        let wrapped = Outer(crate::Error::invalid("x", "y"));
        let chain: Vec<&(dyn StdError + 'static)> = vec![&wrapped, &wrapped.0];
        assert_eq!(exit_status(chain), 2);
        let usage = Usage("--n 0: expected at least 1".into());
        assert_eq!(exit_status([&usage as &(dyn StdError + 'static)]), 2);
        let unknown = std::io::Error::other("?");
        assert_eq!(exit_status([&unknown as &(dyn StdError + 'static)]), 1);
    }
}
