//! SIP status-code patterns as policy files write them: a final code (`486`) or a class
//! pattern with `x` digits (`"5xx"`, `"48x"`).
//!
//! Owns the pattern's syntax and matching only; where a pattern is written (rules,
//! overrides) and how errors are located is the policy parser's business.

/// A final response code 200–699 or a pattern with `x` for any digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePattern {
    /// `None` is an `x`.
    digits: [Option<u8>; 3],
}

impl CodePattern {
    /// `"486"`, `"5xx"`, `"48X"`; the first digit must be 2–6 (a final response).
    pub fn parse(text: &str) -> Option<CodePattern> {
        let bytes = text.as_bytes();
        let shape_ok = bytes.len() == 3
            && matches!(bytes[0], b'2'..=b'6')
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_digit() || *b == b'x' || *b == b'X');
        if !shape_ok {
            return None;
        }
        let mut digits = [None; 3];
        for (slot, b) in digits.iter_mut().zip(bytes) {
            *slot = b.is_ascii_digit().then(|| b - b'0');
        }
        Some(CodePattern { digits })
    }

    pub fn matches(&self, code: u16) -> bool {
        let actual = [code / 100, (code / 10) % 10, code % 10];
        code < 1000
            && self
                .digits
                .iter()
                .zip(actual)
                .all(|(want, got)| want.is_none_or(|d| u16::from(d) == got))
    }

    /// The class digit (2–6): every code the pattern matches is in this class.
    pub fn class(&self) -> u8 {
        self.digits[0].unwrap_or(0)
    }
}

impl std::fmt::Display for CodePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in self.digits {
            match d {
                Some(d) => write!(f, "{d}")?,
                None => f.write_str("x")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::CodePattern;

    #[test]
    fn exact_codes_and_classes() {
        let p = CodePattern::parse("48x").expect("valid");
        assert!(p.matches(486) && p.matches(480) && !p.matches(496) && !p.matches(586));
        assert_eq!(p.to_string(), "48x");
        assert_eq!(p.class(), 4);
        let exact = CodePattern::parse("603").expect("valid");
        assert!(exact.matches(603) && !exact.matches(600));
        assert!(CodePattern::parse("6XX").expect("valid").matches(699));
        for bad in ["", "1xx", "7xx", "4x", "4xxx", "x86", "48y", "+86"] {
            assert_eq!(CodePattern::parse(bad), None, "{bad}");
        }
    }
}
