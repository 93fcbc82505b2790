//! RFC 8285 header extension elements.

use std::iter::FusedIterator;

/// The "defined by profile" value of an extension made of one-byte element headers.
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// The "defined by profile" value of an extension made of two-byte element headers; the low 4
/// bits ("appbits") are application-defined, so any profile `0x1000..=0x100F` is two-byte.
pub const TWO_BYTE_PROFILE: u16 = 0x1000;

/// The one-byte element ID that ends processing of the extension (RFC 8285 §4.2).
const ONE_BYTE_STOP_ID: u8 = 15;

/// One element: its ID and its data.
type Element<'a> = (u8, &'a [u8]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    OneByte,
    TwoByte,
}

/// Iterates over the elements of a header extension; see [`extension_elements`].
#[derive(Debug, Clone)]
pub struct ExtensionElements<'a> {
    form: Form,
    rest: &'a [u8],
}

/// Walks the RFC 8285 elements of a header extension, yielding `(id, data)` per element.
///
/// `profile` and `data` are what [`RtpView::extension`](super::RtpView::extension) returns.
/// With the one-byte profile (`0xBEDE`) each element is a byte `ID << 4 | (len - 1)` followed
/// by 1 to 16 data bytes; with a two-byte profile (`0x100X`) it is an ID byte and a length byte
/// followed by 0 to 255 data bytes. Zero bytes between elements are padding and are skipped.
///
/// Iteration stops, without error, at the first malformed element: one whose data runs past
/// the end, a one-byte element with ID 0 and a non-zero length, or the reserved one-byte ID 15
/// (which RFC 8285 says ends processing). Any other profile yields no elements.
pub fn extension_elements(profile: u16, data: &[u8]) -> ExtensionElements<'_> {
    let (form, rest) = if profile == ONE_BYTE_PROFILE {
        (Form::OneByte, data)
    } else if profile & 0xFFF0 == TWO_BYTE_PROFILE {
        (Form::TwoByte, data)
    } else {
        (Form::OneByte, &[][..])
    };
    ExtensionElements { form, rest }
}

impl<'a> ExtensionElements<'a> {
    /// Splits the next element off `rest`, or `None` at the end or on malformed data.
    fn split_next(&self) -> Option<(Element<'a>, &'a [u8])> {
        let mut rest = self.rest;
        // Skip padding bytes between elements.
        while let [0, tail @ ..] = rest {
            rest = tail;
        }
        let (&first, tail) = rest.split_first()?;
        let (id, len, tail) = match self.form {
            Form::OneByte => {
                let id = first >> 4;
                if id == 0 || id == ONE_BYTE_STOP_ID {
                    return None;
                }
                (id, usize::from(first & 0x0F) + 1, tail)
            }
            Form::TwoByte => {
                let (&len, tail) = tail.split_first()?;
                (first, usize::from(len), tail)
            }
        };
        let element = tail.get(..len)?;
        let rest = tail.get(len..)?;
        Some(((id, element), rest))
    }
}

impl<'a> Iterator for ExtensionElements<'a> {
    type Item = Element<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.split_next() {
            Some((element, rest)) => {
                self.rest = rest;
                Some(element)
            }
            None => {
                self.rest = &[];
                None
            }
        }
    }
}

impl FusedIterator for ExtensionElements<'_> {}
