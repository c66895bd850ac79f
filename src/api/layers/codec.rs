//! The server's protobuf codec: prost's, except that a request that does not decode
//! (invalid UTF-8 in a string field, a truncated or mistyped field) is the caller's
//! mistake and answered `INVALID_ARGUMENT` with a field violation naming the field,
//! instead of tonic's `INTERNAL`.
//!
//! Owns only that mapping; encoding is prost's. Only the generated *server* uses it
//! (build.rs): a client that cannot decode a response keeps tonic's `INTERNAL`.

use crate::api::error::ApiError;
use crate::api::validate::FieldViolation;
use prost::Message;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// See the module docs. `T` is encoded (responses), `U` decoded (requests).
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        RequestCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder { _pd: PhantomData }
    }
}

/// Decodes a request; see [`RequestCodec`].
#[derive(Debug, Clone)]
pub struct RequestDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|e| ApiError::InvalidArgument(vec![violation(&e)]).into())
    }
}

/// The field a decode error is in, as the path a client knows (`outcome.call_id`), and
/// what is wrong. prost exposes the field stack only through the error's text:
/// "failed to decode Protobuf message: CallOutcome.call_id: ReportOutcomeRequest.outcome:
/// invalid string value: data is not UTF-8 encoded" (innermost field first).
fn violation(error: &prost::DecodeError) -> FieldViolation {
    let text = error.to_string();
    let rest = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    let mut fields = Vec::new();
    let mut description = rest;
    while let Some((head, tail)) = description.split_once(": ") {
        let Some((message, field)) = head.split_once('.') else {
            break;
        };
        let ident =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !(ident(message) && ident(field)) {
            break;
        }
        fields.push(field);
        description = tail;
    }
    fields.reverse();
    let field = if fields.is_empty() {
        "request".to_owned()
    } else {
        fields.join(".")
    };
    FieldViolation::new(
        field,
        format!("request is not a valid protobuf message: {description}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto as pb;

    #[test]
    fn invalid_utf8_names_the_field() {
        // ReportOutcomeRequest { outcome (1): CallOutcome { call_id (1): 0xff 0xfe } }
        let bytes = [0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
        let error = pb::ReportOutcomeRequest::decode(&bytes[..]).expect_err("not UTF-8");
        let v = violation(&error);
        assert_eq!(v.field, "outcome.call_id");
        assert!(v.description.contains("not UTF-8"), "{}", v.description);
    }

    #[test]
    fn other_decode_errors_still_say_what_is_wrong() {
        // A length running past the end of the buffer.
        let bytes = [0x0a, 0x10, 0x0a];
        let error = pb::ReportOutcomeRequest::decode(&bytes[..]).expect_err("truncated");
        let v = violation(&error);
        assert!(
            v.description
                .starts_with("request is not a valid protobuf message"),
            "{v:?}"
        );
        let status = Status::from(ApiError::InvalidArgument(vec![v]));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
