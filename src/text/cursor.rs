//! A scanner over one line of a dump, for the parser: it reads characters with a cursor
//! whose positions are byte offsets on char boundaries, so it never indexes into the middle
//! of a UTF-8 sequence.

use crate::dtype::DType;
use crate::graph::op::Ty;
use crate::shape::{Dim, Shape};

/// A scanner over one line. Positions are byte offsets that always sit on char boundaries.
pub(super) struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(s: &'a str) -> Cursor<'a> {
        Cursor { s, pos: 0 }
    }
    pub(super) fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    pub(super) fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    pub(super) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    pub(super) fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }
    pub(super) fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(match self.peek() {
                Some(got) => format!("expected `{c}`, found `{got}`"),
                None => format!("expected `{c}`, found the end of the line"),
            })
        }
    }
    pub(super) fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }
    pub(super) fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.s[start..self.pos]
    }
    pub(super) fn ident(&mut self) -> &'a str {
        self.take_while(|c| c.is_ascii_alphanumeric() || c == '_')
    }
    pub(super) fn number(&mut self) -> Result<usize, String> {
        let d = self.take_while(|c| c.is_ascii_digit());
        d.parse::<usize>()
            .map_err(|_| format!("expected a number, found `{}`", self.rest()))
    }
    pub(super) fn percent_number(&mut self) -> Result<usize, String> {
        self.expect('%')?;
        self.number()
    }
    /// An attribute value: everything up to the next top-level `,` or `)`.
    pub(super) fn balanced(&mut self) -> Result<&'a str, String> {
        let start = self.pos;
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' if depth > 0 => depth -= 1,
                ')' | ',' if depth == 0 => break,
                ']' => return Err("unbalanced `]`".into()),
                _ => {}
            }
            self.bump();
        }
        if depth != 0 || self.at_end() {
            return Err("an attribute value is not closed".into());
        }
        Ok(&self.s[start..self.pos])
    }
    /// `f32[?,784]`
    pub(super) fn ty(&mut self) -> Result<Ty, String> {
        let d = self.ident();
        let dtype = DType::from_name(d).ok_or_else(|| format!("unknown dtype `{d}`"))?;
        self.expect('[')?;
        let mut dims: Vec<Dim> = vec![];
        self.ws();
        if !self.eat(']') {
            loop {
                self.ws();
                if self.eat('?') {
                    dims.push(Dim::Batch);
                } else {
                    dims.push(Dim::Fixed(self.number()?));
                }
                self.ws();
                if self.eat(',') {
                    continue;
                }
                self.expect(']')?;
                break;
            }
        }
        Ok(Ty {
            dtype,
            shape: Shape(dims.into_iter().collect()),
        })
    }
    /// A string literal as Rust's `{:?}` writes it.
    pub(super) fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err("unterminated string".into()),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('0') => out.push('\0'),
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('\'') => out.push('\''),
                    Some('u') => {
                        self.expect('{')?;
                        let hex = self.take_while(|c| c.is_ascii_hexdigit());
                        self.expect('}')?;
                        let ch = u32::from_str_radix(hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("bad escape `\\u{{{hex}}}`"))?;
                        out.push(ch);
                    }
                    Some(c) => return Err(format!("unknown escape `\\{c}`")),
                    None => return Err("unterminated string".into()),
                },
                Some(c) => out.push(c),
            }
        }
    }
    /// The rest of the line up to a `#` comment, consumed.
    pub(super) fn rest_before_comment(&mut self) -> &'a str {
        self.take_while(|c| c != '#')
    }
}
