//! One-line human summaries of a classification (static strings, no allocation).
//!
//! Owns wording only; it must not change a verdict. The deciding input (SIP code or
//! Q.850 cause) selects a more precise sentence where the category alone is too coarse
//! (607 vs 608 vs 603+, 600 vs 486, 484 vs 404, ...).

use crate::domain::{Basis, Category};

/// The summary for `category`, decided by `basis`, where `code` is the effective SIP code
/// when the code decided and `q850` the Q.850 cause when a Reason value decided.
pub(crate) fn summary(
    category: Category,
    basis: Basis,
    code: Option<u16>,
    q850: Option<u8>,
) -> &'static str {
    if basis == Basis::AnalyticsBlock {
        return "The call was blocked by network call analytics (603+ Network Blocked).";
    }
    match category {
        Category::Answered => "The call was answered.",
        Category::Busy => match code {
            Some(600) => "The recipient is busy everywhere and cannot take the call now.",
            _ => "The recipient's line was busy.",
        },
        Category::NoAnswer => "The recipient did not answer before the ring timer ran out.",
        Category::Unavailable => match (code, q850) {
            (_, Some(27)) => "The recipient's line or terminal is out of order.",
            (Some(430), _) => "The connection to the recipient's device has failed.",
            _ => "The recipient is temporarily unavailable.",
        },
        Category::Declined => "The call was declined by the recipient.",
        Category::RejectedUnwanted => match code {
            Some(608) => "An intermediary's call analytics rejected the call (608 Rejected).",
            _ => "The recipient rejected the call as unwanted.",
        },
        Category::InvalidNumber => match (code, q850) {
            (Some(484), _) | (_, Some(28)) => "The dialled number is incomplete or malformed.",
            (Some(410), _) | (_, Some(22 | 23)) => {
                "The dialled number has changed or is no longer in use."
            }
            (Some(485), _) => "The dialled address is ambiguous.",
            (Some(604), _) => "The dialled number does not exist anywhere.",
            _ => "The dialled number does not exist.",
        },
        Category::Redirect => match code {
            Some(380) => "The call was refused with a suggestion to use an alternative service.",
            _ => "The call was redirected to another destination.",
        },
        Category::Canceled => "The call was canceled by the calling side.",
        Category::ConfigError => match (code, q850) {
            (Some(401 | 407), _) => "The call was refused because our credentials were rejected.",
            (Some(428 | 436 | 437 | 438), _) => {
                "The call was refused because caller identity signing (STIR/SHAKEN) failed."
            }
            (Some(415 | 488 | 606), _) | (_, Some(65 | 88)) => {
                "The call failed because no acceptable media (codec or SRTP) was offered."
            }
            (Some(402), _) => "The call was refused for a payment or account reason.",
            (Some(403), _) | (_, Some(21 | 52 | 57 | 87 | 55)) => {
                "The call was refused by carrier or network policy."
            }
            _ => "The call failed because of a configuration problem on the calling side.",
        },
        Category::NetworkError => match (code, q850) {
            (_, Some(3 | 2 | 26)) => "No route to the destination was available.",
            (_, Some(34 | 42)) => "The network was congested.",
            (Some(408 | 504), None) | (_, Some(102)) => "The request timed out in the network.",
            (Some(503), None) => "The server or route is temporarily unavailable.",
            (Some(482 | 483), None) => "The call looped or exceeded the hop limit.",
            _ => "A network, gateway or server failure prevented the call.",
        },
        Category::Other => "The outcome could not be classified from what was reported.",
    }
}
