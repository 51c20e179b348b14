//! Command examples, as printed in `--help` texts and in the docs, split into arguments so a test
//! can parse each with the binary's own CLI definition: an example that no longer parses fails
//! the build's tests, not a reader.

use std::path::Path;

/// Shell-like words of one command line: quotes group (single and double), a backslash escapes,
/// `$(…)` and `$VAR` stay one word each, `…` (an elision in prose) is dropped, and a `#` comment
/// ends the line.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                has = true;
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                    cur.push(d);
                }
            }
            '"' => {
                has = true;
                while let Some(d) = chars.next() {
                    match d {
                        '"' => break,
                        '\\' => {
                            if let Some(e) = chars.next() {
                                cur.push(e);
                            }
                        }
                        _ => cur.push(d),
                    }
                }
            }
            '\\' => {
                if let Some(e) = chars.next() {
                    cur.push(e);
                    has = true;
                }
            }
            '$' if chars.peek() == Some(&'(') => {
                has = true;
                let mut depth = 0;
                cur.push('$');
                for d in chars.by_ref() {
                    cur.push(d);
                    match d {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '#' if !has => break,
            c if c.is_whitespace() => {
                if has && cur != "…" {
                    out.push(std::mem::take(&mut cur));
                }
                cur.clear();
                has = false;
            }
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has && cur != "…" {
        out.push(cur);
    }
    out
}

/// The command lines in `text` that run `bin` (a line starting with it, after an optional `$ `
/// prompt; lines ending in `\` continue), as words with `bin` first. Lines with `|`, `>` or `&&`
/// keep only the part before.
pub fn commands(text: &str, bin: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t = line.trim().trim_start_matches("$ ");
        if !(t.starts_with(&format!("{bin} ")) || t == bin) {
            continue;
        }
        let mut full = t.to_owned();
        while full.ends_with('\\') {
            full.pop();
            match lines.next() {
                Some(n) => {
                    full.push(' ');
                    full.push_str(n.trim());
                }
                None => break,
            }
        }
        for sep in [" | ", " > ", " && ", " 2>", " &"] {
            if let Some(i) = full.find(sep) {
                full.truncate(i);
            }
        }
        out.push(words(&full));
    }
    out
}

/// The text of README.md and every docs/*.md, by file name.
pub fn docs() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    if let Ok(rd) = std::fs::read_dir(root.join("docs")) {
        let mut d: Vec<_> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        d.sort();
        files.extend(d);
    }
    files
        .into_iter()
        .filter_map(|p| {
            let t = std::fs::read_to_string(&p).ok()?;
            Some((p.file_name()?.to_string_lossy().into_owned(), t))
        })
        .collect()
}

/// The `--help` texts (after-help) of `cmd` and every subcommand.
fn after_helps(c: &clap::Command, out: &mut Vec<String>) {
    for h in [c.get_after_help(), c.get_after_long_help()]
        .into_iter()
        .flatten()
    {
        out.push(h.to_string());
    }
    for s in c.get_subcommands() {
        after_helps(s, out);
    }
}

/// [`assert_examples_parse`] for the binary `bin` whose command line is `C`.
pub fn assert_cli_examples_parse<C: clap::Parser>(bin: &str, min: usize) {
    assert_examples_parse(C::command(), bin, min, |args| {
        C::try_parse_from(args).map(drop).map_err(|e| e.to_string())
    });
}

/// Assert that every example of `bin` in `cmd`'s `--help` texts and in README.md and docs/*.md
/// parses with `parse` (the binary's own `Cli::try_parse_from`), that the definition is
/// consistent (`debug_assert`), and that at least `min` examples were found.
pub fn assert_examples_parse(
    cmd: clap::Command,
    bin: &str,
    min: usize,
    parse: impl Fn(&[String]) -> Result<(), String>,
) {
    cmd.clone().debug_assert();
    let mut helps = Vec::new();
    after_helps(&cmd, &mut helps);
    let texts = helps
        .into_iter()
        .map(|t| ("--help".to_owned(), t))
        .chain(docs());
    let (mut checked, mut failed) = (0, Vec::new());
    for (file, text) in texts {
        for args in commands(&text, bin) {
            checked += 1;
            if let Err(e) = parse(&args) {
                let first = e.lines().next().unwrap_or_default().to_owned();
                failed.push(format!("{file}: `{}`: {first}", args.join(" ")));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} example(s) do not parse:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(checked >= min, "only {checked} examples of {bin} found");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            words(r#"a --module "vmseal-host 0.1.0" 'x y' $(sha256sum f | cut -c1-64) … b # c"#),
            [
                "a",
                "--module",
                "vmseal-host 0.1.0",
                "x y",
                "$(sha256sum f | cut -c1-64)",
                "b"
            ]
        );
        let t = "x\n  $ vm run --a 1 \\\n    --b 2 | tee log\nvm\n";
        assert_eq!(
            commands(t, "vm"),
            [vec!["vm", "run", "--a", "1", "--b", "2"], vec!["vm"]]
        );
    }
}
