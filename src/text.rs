//! Text from outside (an option value, a name from a tar, a parser's complaint) made fit
//! for a one-line error message.

/// The longest text an error message quotes, in characters; the rest is cut to "...".
const MAX_QUOTED: usize = 1000;

/// `text` on one line: control characters (a newline in an option value, an escape
/// sequence in a tar name) become `?`, and the text is cut after `MAX_QUOTED` characters.
pub fn one_line(text: &str) -> String {
    let mut s = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_QUOTED {
            s.push_str("...");
            break;
        }
        s.push(if c.is_control() { '?' } else { c });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_question_marks() {
        assert_eq!(one_line("a\nb\tc\u{1b}[0m"), "a?b?c?[0m");
        assert_eq!(one_line("plain é"), "plain é");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(MAX_QUOTED + 5);
        let shown = one_line(&long);
        assert_eq!(shown.len(), MAX_QUOTED + 3);
        assert!(shown.ends_with("..."));
        assert_eq!(one_line(&"y".repeat(MAX_QUOTED)), "y".repeat(MAX_QUOTED));
    }
}
