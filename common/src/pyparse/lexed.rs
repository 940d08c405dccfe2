//! The token stream: marker comments, bracket pairs and the lexer errors Python reports elsewhere.

use rustpython_parser::lexer::{self, LexResult, LexicalError, LexicalErrorType};
use rustpython_parser::text_size::{TextRange, TextSize};
use rustpython_parser::{Mode, Tok};

/// What the marker search and the extra syntax checks need from the token stream.
#[derive(Default)]
pub(super) struct Lexed {
    /// Ranges of string literals, sorted: a `#` inside one is not a comment.
    pub(super) strings: Vec<TextRange>,
    /// Offsets of `@` tokens, sorted: they start decorators.
    pub(super) ats: Vec<TextSize>,
    /// The first `*` of a `*, **` sequence, which the parser accepts but Python does not.
    pub(super) bare_star: Option<TextSize>,
    /// `(start, end)` of each pair of matching parentheses, sorted by start.
    pub(super) parens: Vec<(TextSize, TextSize)>,
    /// The innermost bracket still open when the lexer hit the end of the file.
    pub(super) unclosed: Option<(TextSize, char)>,
    /// The first closing bracket of the wrong kind, with the bracket it closes.
    pub(super) mismatch: Option<(TextSize, char, char)>,
}

impl Lexed {
    /// Lexes `source`: the tokens up to and including the first lexical error, for the parser
    /// (which stops there), and what this module needs from them.
    pub(super) fn new(source: &str) -> (Vec<LexResult>, Self) {
        let mut tokens: Vec<LexResult> = Vec::new();
        let mut lexed = Lexed::default();
        // Open brackets, innermost last.
        let mut open = Vec::new();
        for token in lexer::lex(source, Mode::Module) {
            match token {
                Ok((tok, range)) => {
                    lexed.note(&tok, range, &tokens, &mut open);
                    tokens.push(Ok((tok, range)));
                }
                Err(error) => {
                    let after = match tokens.last() {
                        Some(Ok((_, range))) => range.end(),
                        _ => TextSize::default(),
                    };
                    let error = locate_unterminated_string(source, after, error);
                    // The lexer's end-of-file error, when not a string's, is an open bracket's.
                    if error.error == LexicalErrorType::Eof {
                        lexed.unclosed = open.last().copied();
                    }
                    tokens.push(Err(error));
                    break;
                }
            }
        }
        lexed.parens.sort_unstable();
        (tokens, lexed)
    }

    /// Records what token `tok` at `range` tells, given the tokens before it.
    pub(super) fn note(
        &mut self,
        tok: &Tok,
        range: TextRange,
        before: &[LexResult],
        open: &mut Vec<(TextSize, char)>,
    ) {
        let closer = match tok {
            Tok::String { .. } => return self.strings.push(range),
            Tok::At => return self.ats.push(range.start()),
            Tok::Lpar => return open.push((range.start(), '(')),
            Tok::Lsqb => return open.push((range.start(), '[')),
            Tok::Lbrace => return open.push((range.start(), '{')),
            Tok::DoubleStar => {
                let last_two = before.len().checked_sub(2).and_then(|i| before.get(i..));
                if let Some([Ok((Tok::Star, star)), Ok((Tok::Comma, _))]) = last_two {
                    self.bare_star = self.bare_star.or(Some(star.start()));
                }
                return;
            }
            Tok::Rpar => ')',
            Tok::Rsqb => ']',
            Tok::Rbrace => '}',
            _ => return,
        };
        // A closing bracket with nothing open is an error the lexer reports itself.
        match open.pop() {
            Some((start, '(')) if closer == ')' => self.parens.push((start, range.end())),
            Some((_, opener)) if !matches!((opener, closer), ('[', ']') | ('{', '}')) => {
                self.mismatch = self.mismatch.or(Some((range.start(), closer, opener)));
            }
            _ => {}
        }
    }

    /// Where and what a parser error is, as Python would say: the parser stumbles wherever a
    /// bracket problem stops making sense, Python blames the bracket.
    pub(super) fn explain(&self, error: rustpython_parser::ParseError) -> (TextSize, String) {
        match (self.mismatch, self.unclosed) {
            (Some((at, closer, opener)), _) if at <= error.offset => (
                at,
                format!(
                    "closing parenthesis '{closer}' does not match opening parenthesis '{opener}'"
                ),
            ),
            (_, Some((at, bracket))) if at < error.offset => {
                (at, format!("'{bracket}' was never closed"))
            }
            _ => (error.offset, error.error.to_string()),
        }
    }
}

/// Moves an unterminated-string error from where the lexer gave up (the next line, or the end
/// of the file) to the start of the string, where Python reports it. `after` is the end of
/// the last good token, so the failing token starts at the first non-trivia character after it.
pub(super) fn locate_unterminated_string(
    source: &str,
    after: TextSize,
    error: LexicalError,
) -> LexicalError {
    let unterminated = match &error.error {
        LexicalErrorType::Eof | LexicalErrorType::StringError => true,
        LexicalErrorType::OtherError(message) => message.starts_with("EOL while scanning"),
        _ => false,
    };
    let Some(mut rest) = source.get(usize::from(after)..).filter(|_| unterminated) else {
        return error;
    };
    // Skip whitespace, comments and line continuations.
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\x0c', '\r', '\n', '\\']);
        match rest.strip_prefix('#') {
            Some(comment) => rest = comment.find(['\r', '\n']).map_or("", |i| &comment[i..]),
            None => break,
        }
    }
    let prefix = rest.find(['"', '\'']).unwrap_or(usize::MAX);
    let is_string = rest
        .get(..prefix)
        .is_some_and(|p| p.len() <= 2 && p.chars().all(|c| "rRbBuUfF".contains(c)));
    let quotes = rest.get(prefix..).unwrap_or("");
    let message = if quotes.starts_with("\"\"\"") || quotes.starts_with("'''") {
        "unterminated triple-quoted string literal"
    } else {
        "unterminated string literal"
    };
    match TextSize::try_from(source.len() - rest.len()) {
        Ok(start) if is_string && start < error.location => {
            LexicalError::new(LexicalErrorType::OtherError(message.to_string()), start)
        }
        _ => error,
    }
}
