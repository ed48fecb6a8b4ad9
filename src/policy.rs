//! The command policy: `COMMAND_ALLOWLIST`, which programs a command may start.
//!
//! With no list (the default) every command is allowed. With a list (program names such as
//! `git,python3,pytest,ls,cat,grep`), every command string is parsed as bash by
//! [`brush_parser`] before anything runs, and it runs only when every program it would start
//! is listed. The walk covers the whole syntax tree: simple commands in pipelines and lists
//! (`&&`, `||`, `;`, `&`), subshells, brace groups, the conditions and bodies of
//! `if`/`while`/`until`/`for`/`case`, `coproc`, function bodies, and every word, wherever it
//! appears (arguments, assignments, redirection targets, `case` patterns, expanded here-doc
//! bodies, `${x:-…}` operands): each command substitution (`$(…)`, backticks) and process
//! substitution (`<(…)`, `>(…)`) in them is parsed and checked the same way, recursively.
//! What the policy cannot prove from the text is refused, with a reason.
//!
//! The rules:
//! - **Names and paths.** A command given as a plain name (`git`) is allowed when the list
//!   has that name. A command given as a path (`/usr/bin/git`, `./run.sh`, anything with a
//!   `/`) is allowed only when the list has exactly that path: `git` in the list does not
//!   allow `/usr/bin/git`, nor `/usr/bin/git` the name `git`. Quote removal happens first
//!   (`'g'it` and `g\it` are `git`).
//! - **What cannot be checked is refused**: a variable, command substitution, arithmetic,
//!   `~`, a glob pattern or a brace expansion in command position (`$CMD`, `"$X" arg`,
//!   `$(echo ls)`, `c*l`, `{rm,x}`); and unparsable input.
//! - **Builtins that run nothing else** are allowed without being listed: `cd`, `echo`,
//!   `printf`, `true`, `false`, `:`, `test`, `[`, `export`, `unset`, `read`, `set`, `shift`,
//!   `exit`, `return`, `local`, `declare`, `typeset`, `readonly`, `pwd`, `wait`, `break`,
//!   `continue`, and the `[[ … ]]`, `((…))`, `time` and `!` syntax (their parts are checked).
//!   Where bash would evaluate one of their arguments as code, that argument is checked:
//!   the variable names given to `read`, `printf -v`, `declare`/`local`/`export`/…,
//!   `unset`, `test -v`, `wait -p` must be literal (an array subscript in them is arithmetic,
//!   see below); `declare`/`local`/`typeset` `-i` (integer: assignments become arithmetic)
//!   and `-n` (nameref) are refused, and so is `set -k`/`set -o keyword`.
//! - **Builtins that run code or other programs** are refused unless listed: `eval`,
//!   `source`/`.` (unless the file itself is listed as that path), `command` (except the
//!   lookups `command -v`/`-V`), `builtin`, `trap`, `alias`, `enable`, `hash`, `let`,
//!   `mapfile`/`readarray`, `shopt`, `fc`, `bind`, `complete`, `compgen`. `exec` with
//!   arguments is allowed when the program it starts is listed (`exec` alone, for
//!   redirections, is fine). `coproc` is checked like `&`: its command must pass.
//! - **Wrappers** that start other programs (`env`, `xargs`, `sh`, `bash`, `nice`, `timeout`,
//!   `nohup`, `sudo`, `find`, …) are ordinary programs here: refused unless listed, and a
//!   listed wrapper is allowed with whatever it runs. The same holds for any listed program
//!   that can run others (`python3 -c`, `git -c core.pager=…`, `find -exec`): listing it
//!   trusts it.
//! - **Functions.** Every function the command defines has its body checked where it is
//!   defined, called or not (so a function cannot smuggle in a refused program through a
//!   hook such as `command_not_found_handle`); calling a name that is neither listed, a
//!   builtin above, nor defined in the command is refused.
//! - **Assignments** (`FOO=1 git x`, bare `x=…`, `declare x=…`, `for x in`, `read x`, …)
//!   run nothing, but their values are checked for substitutions. Assigning the variables
//!   that decide which program a name starts or that bash runs as code is refused: `PATH`,
//!   `BASH_CMDS`, `BASH_ALIASES`, `EXECIGNORE`, `BASH_ENV`, `ENV`, `PS0`–`PS4`,
//!   `PROMPT_COMMAND`, `SHELLOPTS`, `BASHOPTS`, `BASH_LOADABLES_PATH`, `LD_PRELOAD`,
//!   `LD_LIBRARY_PATH`, `LD_AUDIT`; the integer specials (`RANDOM`, `OPTIND`, …) take a plain
//!   number only. [`CommandPolicy::check_environment`] applies the same names to the
//!   environment given with a command.
//! - **Arithmetic** (`$((…))`, `((…))`, `for ((…))`, `[[ a -eq b ]]`, array subscripts,
//!   `${x:off:len}`): bash evaluates a variable's *value* as an expression there, and an
//!   array subscript inside that value runs command substitutions (`x='a[$(rm y)]';
//!   echo $((x))` runs `rm`). The policy sees only the text, so arithmetic may use numbers,
//!   operators and `$#`, `$?`, `$$`, `$!`; a variable or a command substitution in it is
//!   refused. For the same reason `${!x}` (indirection) and `${x@P}` (prompt expansion) are
//!   refused.
//!
//! Limits: the policy decides which programs the shell starts, not what a listed program
//! does once started, nor what bash itself does without a program (redirections to
//! `/dev/tcp/…` open connections). A listed relative path (`./run.sh`) is matched as text:
//! it allows whatever file that path names in the current directory. The container's own
//! environment (a `PATH` with `.` in it, say) is the image's business. The parser is
//! brush's, which follows bash closely but not perfectly; what it cannot parse is refused
//! (`select`, `for ((;;))`, `$((1)+(2))` among others), and where it reads a construct
//! differently from bash (`( (…) )`, which it takes for arithmetic) the command is refused.

use std::collections::HashSet;
use std::fmt;

use brush_parser::ast;
use brush_parser::word::{self, Parameter, ParameterExpr, ParameterTransformOp, WordPiece};
use brush_parser::{Parser, ParserOptions};

/// How deep command substitutions may nest before the policy gives up.
const MAX_DEPTH: usize = 32;

/// Builtins (and reserved words that reach here as names) that run nothing else; some of
/// them get their arguments checked (see [`Checker::check_builtin_args`]).
const SAFE_BUILTINS: &[&str] = &[
    "cd", "echo", "printf", "true", "false", ":", "test", "[", "export", "unset", "read", "set",
    "shift", "exit", "return", "local", "declare", "typeset", "readonly", "pwd", "wait", "break",
    "continue",
];

/// Builtins that run code or programs the policy cannot see, with the reason.
const CODE_BUILTINS: &[(&str, &str)] = &[
    ("eval", "runs code the policy cannot check"),
    ("builtin", "runs another builtin the policy cannot check"),
    ("trap", "runs code the policy cannot check"),
    ("alias", "defines commands the policy cannot check"),
    ("enable", "can load and replace builtins"),
    ("hash", "can map a name to another program"),
    (
        "let",
        "evaluates arithmetic on values the policy cannot check",
    ),
    ("mapfile", "can run a callback the policy cannot check"),
    ("readarray", "can run a callback the policy cannot check"),
    ("shopt", "changes how the shell parses and runs commands"),
    ("fc", "runs commands from the history"),
    ("bind", "can bind keys to commands"),
    ("complete", "can run code the policy cannot check"),
    ("compgen", "can run code the policy cannot check"),
];

/// Programs whose job is to start other programs: refused unless listed, with a hint.
const WRAPPERS: &[&str] = &[
    "env",
    "xargs",
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "fish",
    "nice",
    "timeout",
    "nohup",
    "sudo",
    "su",
    "doas",
    "find",
    "time",
    "watch",
    "strace",
    "ltrace",
    "chroot",
    "setsid",
    "stdbuf",
    "ionice",
    "taskset",
    "unshare",
    "nsenter",
    "flock",
    "parallel",
    "script",
    "busybox",
    "runuser",
    "chrt",
    "prlimit",
    "firejail",
    "systemd-run",
    "exec",
];

/// Variables that decide which program a name starts, or that bash runs as code.
pub const CODE_VARIABLES: &[&str] = &[
    "PATH",
    "BASH_CMDS",
    "BASH_ALIASES",
    "EXECIGNORE",
    "BASH_ENV",
    "ENV",
    "PS0",
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "PROMPT_COMMAND",
    "SHELLOPTS",
    "BASHOPTS",
    "BASH_LOADABLES_PATH",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
];

/// Special variables whose assignment bash evaluates as arithmetic.
const INTEGER_VARIABLES: &[&str] = &[
    "RANDOM", "SRANDOM", "OPTIND", "SECONDS", "LINENO", "HISTCMD", "COLUMNS", "LINES",
];

/// The parsed COMMAND_ALLOWLIST.
#[derive(Debug, Clone, Default)]
pub struct CommandPolicy {
    programs: Vec<String>,
}

/// Why a command is not allowed: the detail of the 403, naming the program and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl From<Refusal> for crate::error::Error {
    fn from(refusal: Refusal) -> Self {
        crate::error::Error::CommandNotAllowed(refusal.0)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

type Checked = Result<(), Refusal>;

fn refuse<T>(detail: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(detail.into()))
}

impl CommandPolicy {
    /// From the setting's items (empty: everything allowed). Items are trimmed; empty ones
    /// and duplicates are dropped.
    pub fn new(programs: &[String]) -> Self {
        let mut list: Vec<String> = Vec::new();
        for program in programs {
            let program = program.trim();
            if !program.is_empty() && !list.iter().any(|p| p == program) {
                list.push(program.to_owned());
            }
        }
        Self { programs: list }
    }

    /// Whether any command is allowed (no list).
    pub fn allows_everything(&self) -> bool {
        self.programs.is_empty()
    }

    /// The listed programs, for /info.
    pub fn programs(&self) -> &[String] {
        &self.programs
    }

    /// Ok when every program `command` would start is listed; else the refusal, naming the
    /// program and why.
    pub fn check(&self, command: &str) -> Result<(), Refusal> {
        if self.allows_everything() {
            return Ok(());
        }
        let mut checker = Checker {
            policy: self,
            options: parser_options(),
            defined: HashSet::new(),
            called: Vec::new(),
            depth: 0,
            sources: Vec::new(),
        };
        checker.check_program(command)?;
        for name in &checker.called {
            if !checker.defined.contains(name) {
                return refuse(format!("{name} is not in COMMAND_ALLOWLIST"));
            }
        }
        Ok(())
    }

    /// Ok unless the environment given with a command sets a variable that decides which
    /// program a name starts or that bash runs as code (`PATH`, `BASH_ENV`, `PS4`, …, and
    /// exported functions `BASH_FUNC_*`). Everything is allowed with no list.
    pub fn check_environment<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Refusal> {
        if self.allows_everything() {
            return Ok(());
        }
        for name in names {
            if CODE_VARIABLES.contains(&name) || name.starts_with("BASH_FUNC_") {
                return refuse(format!(
                    "setting {name} can change what a command runs, which the policy cannot check"
                ));
            }
        }
        Ok(())
    }

    fn lists(&self, program: &str) -> bool {
        self.programs.iter().any(|p| p == program)
    }
}

/// Bash's defaults for `bash -c`: no extglob, not POSIX mode.
fn parser_options() -> ParserOptions {
    ParserOptions {
        enable_extended_globbing: false,
        ..ParserOptions::default()
    }
}

/// An argument of a simple command, for the builtins whose arguments matter.
#[derive(Clone, Copy)]
enum Arg<'a> {
    Word(&'a ast::Word),
    Assignment(&'a ast::Assignment, &'a ast::Word),
    ProcessSubstitution,
}

struct Checker<'p> {
    policy: &'p CommandPolicy,
    options: ParserOptions,
    /// Functions the command defines (their bodies are checked where defined).
    defined: HashSet<String>,
    /// Names called that are neither listed nor builtins: must be defined functions.
    called: Vec<String>,
    depth: usize,
    /// The text being parsed, innermost last (to read what the parser matched).
    sources: Vec<Vec<char>>,
}

impl Checker<'_> {
    // ---- programs and lists ---------------------------------------------------------------

    fn check_program(&mut self, source: &str) -> Checked {
        if self.depth >= MAX_DEPTH {
            return refuse("the command nests substitutions too deeply to be checked");
        }
        let program = Parser::new(source.as_bytes(), &self.options)
            .parse_program()
            .or_else(|e| refuse(format!("the command cannot be parsed: {e}")))?;
        self.depth += 1;
        self.sources.push(source.chars().collect());
        let result = program
            .complete_commands
            .iter()
            .try_for_each(|list| self.check_compound_list(list));
        self.sources.pop();
        self.depth -= 1;
        result
    }

    fn check_compound_list(&mut self, list: &ast::CompoundList) -> Checked {
        list.0
            .iter()
            .try_for_each(|item| self.check_and_or_list(&item.0))
    }

    fn check_and_or_list(&mut self, list: &ast::AndOrList) -> Checked {
        self.check_pipeline(&list.first)?;
        for next in &list.additional {
            match next {
                ast::AndOr::And(pipeline) | ast::AndOr::Or(pipeline) => {
                    self.check_pipeline(pipeline)?;
                }
            }
        }
        Ok(())
    }

    fn check_pipeline(&mut self, pipeline: &ast::Pipeline) -> Checked {
        pipeline
            .seq
            .iter()
            .try_for_each(|command| self.check_command(command))
    }

    fn check_command(&mut self, command: &ast::Command) -> Checked {
        match command {
            ast::Command::Simple(simple) => self.check_simple(simple),
            ast::Command::Compound(compound, redirects) => {
                self.check_compound(compound)?;
                self.check_redirect_list(redirects.as_ref())
            }
            ast::Command::Function(function) => self.check_function(function),
            ast::Command::ExtendedTest(test, redirects) => {
                self.check_extended_test(&test.expr)?;
                self.check_redirect_list(redirects.as_ref())
            }
        }
    }

    fn check_function(&mut self, function: &ast::FunctionDefinition) -> Checked {
        let name = self
            .literal(&function.fname.value)?
            .unwrap_or_else(|| function.fname.value.clone());
        self.defined.insert(name);
        let ast::FunctionBody(body, redirects) = &function.body;
        self.check_compound(body)?;
        self.check_redirect_list(redirects.as_ref())
    }

    fn check_compound(&mut self, compound: &ast::CompoundCommand) -> Checked {
        match compound {
            ast::CompoundCommand::Arithmetic(arithmetic) => {
                // brush reads `( (…) )` (two subshells in bash) as `((…))` too.
                // And bash reads `((…) )` as a subshell: only `((…))` is arithmetic.
                let start = arithmetic.loc.start.index;
                let end = arithmetic.loc.end.index;
                let is_arithmetic = self.sources.last().is_some_and(|source| {
                    end >= start + 4
                        && source.get(start..start + 2) == Some(['(', '('].as_slice())
                        && source.get(end - 2..end) == Some([')', ')'].as_slice())
                });
                if !is_arithmetic {
                    return refuse(
                        "the command cannot be parsed reliably: only `((…))` is arithmetic (write a subshell as `( {…;} )`)",
                    );
                }
                self.check_arithmetic(&arithmetic.expr.value)
            }
            ast::CompoundCommand::ArithmeticForClause(clause) => {
                for expr in [&clause.initializer, &clause.condition, &clause.updater]
                    .into_iter()
                    .flatten()
                {
                    self.check_arithmetic(&expr.value)?;
                }
                self.check_compound_list(&clause.body.list)
            }
            ast::CompoundCommand::BraceGroup(group) => self.check_compound_list(&group.list),
            ast::CompoundCommand::Subshell(subshell) => self.check_compound_list(&subshell.list),
            ast::CompoundCommand::ForClause(clause) => {
                check_assigned_name(&clause.variable_name)?;
                if INTEGER_VARIABLES.contains(&clause.variable_name.as_str()) {
                    return refuse(format!(
                        "a loop over {} cannot be checked: bash evaluates its values as arithmetic",
                        clause.variable_name
                    ));
                }
                for value in clause.values.iter().flatten() {
                    self.check_word(value)?;
                }
                self.check_compound_list(&clause.body.list)
            }
            ast::CompoundCommand::CaseClause(clause) => {
                self.check_word(&clause.value)?;
                for case in &clause.cases {
                    for pattern in &case.patterns {
                        self.check_word(pattern)?;
                    }
                    if let Some(list) = &case.cmd {
                        self.check_compound_list(list)?;
                    }
                }
                Ok(())
            }
            ast::CompoundCommand::IfClause(clause) => {
                self.check_compound_list(&clause.condition)?;
                self.check_compound_list(&clause.then)?;
                for branch in clause.elses.iter().flatten() {
                    if let Some(condition) = &branch.condition {
                        self.check_compound_list(condition)?;
                    }
                    self.check_compound_list(&branch.body)?;
                }
                Ok(())
            }
            ast::CompoundCommand::WhileClause(clause)
            | ast::CompoundCommand::UntilClause(clause) => {
                self.check_compound_list(&clause.0)?;
                self.check_compound_list(&clause.1.list)
            }
            ast::CompoundCommand::Coprocess(coprocess) => {
                if let Some(name) = &coprocess.name {
                    self.check_name_argument(name)?;
                }
                self.check_command(&coprocess.body)
            }
        }
    }

    // ---- simple commands ------------------------------------------------------------------

    fn check_simple(&mut self, simple: &ast::SimpleCommand) -> Checked {
        for item in simple.prefix.iter().flat_map(|prefix| prefix.0.iter()) {
            self.check_item(item)?;
        }
        let mut args = Vec::new();
        for item in simple.suffix.iter().flat_map(|suffix| suffix.0.iter()) {
            self.check_item(item)?;
            match item {
                ast::CommandPrefixOrSuffixItem::Word(word) => {
                    // `{NAME}>file` (brush reads `{NAME}` as a word) assigns NAME an fd.
                    if let Some(name) = word
                        .value
                        .strip_prefix('{')
                        .and_then(|rest| rest.strip_suffix('}'))
                    {
                        check_assigned_name(name)?;
                    }
                    args.push(Arg::Word(word));
                }
                ast::CommandPrefixOrSuffixItem::AssignmentWord(assignment, word) => {
                    args.push(Arg::Assignment(assignment, word));
                }
                ast::CommandPrefixOrSuffixItem::ProcessSubstitution(..) => {
                    args.push(Arg::ProcessSubstitution);
                }
                ast::CommandPrefixOrSuffixItem::IoRedirect(_) => {}
            }
        }
        let Some(name_word) = &simple.word_or_name else {
            return Ok(());
        };
        self.check_word(name_word)?;
        let name = self.command_name(name_word)?;
        self.check_invocation(&name, &args)
    }

    /// Checks the substitutions in one prefix or suffix item.
    fn check_item(&mut self, item: &ast::CommandPrefixOrSuffixItem) -> Checked {
        match item {
            ast::CommandPrefixOrSuffixItem::IoRedirect(redirect) => self.check_redirect(redirect),
            ast::CommandPrefixOrSuffixItem::Word(word) => self.check_word(word),
            ast::CommandPrefixOrSuffixItem::AssignmentWord(assignment, _) => {
                self.check_assignment(assignment)
            }
            ast::CommandPrefixOrSuffixItem::ProcessSubstitution(_, subshell) => {
                self.check_compound_list(&subshell.list)
            }
        }
    }

    /// Whether the program `name` (after quote removal) may run with `args`.
    fn check_invocation(&mut self, name: &str, args: &[Arg<'_>]) -> Checked {
        if self.policy.lists(name) {
            return Ok(());
        }
        if name.contains('/') {
            return refuse(format!(
                "{name} is not in COMMAND_ALLOWLIST (a program given by path must be listed as that path)"
            ));
        }
        if SAFE_BUILTINS.contains(&name) {
            return self.check_builtin_args(name, args);
        }
        if let Some((_, why)) = CODE_BUILTINS.iter().find(|(builtin, _)| *builtin == name) {
            return refuse(format!("{name} {why}"));
        }
        match name {
            "exec" => self.check_exec(args),
            "source" | "." => {
                let file = match args.first() {
                    Some(arg) => self.arg_literal(*arg)?,
                    None => return Ok(()),
                };
                match file {
                    Some(file) if self.policy.lists(&file) => Ok(()),
                    Some(file) => refuse(format!(
                        "{name} runs the file {file} as shell code the policy cannot check"
                    )),
                    None => refuse(format!(
                        "{name} runs a file the policy cannot name, as shell code it cannot check"
                    )),
                }
            }
            "command" => {
                // `command -v`/`-V` only look names up; options end at the first other word.
                let mut lookup_only = false;
                for arg in args {
                    match self.arg_literal(*arg)? {
                        Some(option) if option.starts_with('-') && option != "--" => {
                            lookup_only |= option.contains(['v', 'V']);
                        }
                        _ => break,
                    }
                }
                if lookup_only {
                    return Ok(());
                }
                let target = args
                    .iter()
                    .find_map(|arg| match self.arg_literal(*arg) {
                        Ok(Some(word)) if !word.starts_with('-') => Some(word),
                        _ => None,
                    })
                    .unwrap_or_default();
                refuse(format!(
                    "command runs another program ({target}) and is not in COMMAND_ALLOWLIST"
                ))
            }
            _ if WRAPPERS.contains(&name) => refuse(format!(
                "{name} runs other programs and is not in COMMAND_ALLOWLIST"
            )),
            _ => {
                // Allowed only if the command defines it as a function (resolved at the end).
                self.called.push(name.to_owned());
                Ok(())
            }
        }
    }

    /// `exec [-cl] [-a name] [program args…]`: the program must be listed.
    fn check_exec(&mut self, args: &[Arg<'_>]) -> Checked {
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let Arg::Word(word) = arg else {
                return refuse("exec starts a program the policy cannot name");
            };
            let literal = self.literal(&word.value)?;
            match literal.as_deref() {
                Some("--") => {
                    return match rest.next() {
                        Some(Arg::Word(word)) => self.check_exec_target(word),
                        Some(_) => refuse("exec starts a program the policy cannot name"),
                        None => Ok(()),
                    };
                }
                Some(option) if option.starts_with('-') && option.len() > 1 => {
                    if option.contains('a') {
                        rest.next();
                    }
                }
                _ => return self.check_exec_target(word),
            }
        }
        Ok(())
    }

    fn check_exec_target(&mut self, word: &ast::Word) -> Checked {
        let target = self.command_name(word)?;
        if self.policy.lists(&target) {
            Ok(())
        } else {
            refuse(format!(
                "exec starts {target}, which is not in COMMAND_ALLOWLIST"
            ))
        }
    }

    /// The arguments of the safe builtins that bash may evaluate as code.
    fn check_builtin_args(&mut self, name: &str, args: &[Arg<'_>]) -> Checked {
        match name {
            "read" => self.check_read(args),
            "printf" => {
                let Some(first) = args.first() else {
                    return Ok(());
                };
                match self.arg_literal(*first)? {
                    Some(option) if option == "-v" => match args.get(1) {
                        Some(arg) => self.check_name_arg(*arg),
                        None => Ok(()),
                    },
                    Some(option) if option.starts_with("-v") => {
                        check_variable_name(self, &option[2..])
                    }
                    Some(_) => Ok(()),
                    None => refuse(
                        "printf with a variable first argument cannot be checked (it may be -v NAME)",
                    ),
                }
            }
            "test" | "[" => {
                let mut rest = args.iter();
                while let Some(arg) = rest.next() {
                    if self.arg_literal(*arg)?.as_deref() == Some("-v")
                        && let Some(next) = rest.next()
                    {
                        self.check_name_arg(*next)?;
                    }
                }
                Ok(())
            }
            "wait" => {
                let mut rest = args.iter();
                while let Some(arg) = rest.next() {
                    if let Some(option) = self.arg_literal(*arg)?
                        && option.starts_with('-')
                        && option.contains('p')
                        && let Some(next) = rest.next()
                    {
                        self.check_name_arg(*next)?;
                    }
                }
                Ok(())
            }
            "declare" | "typeset" | "local" | "export" | "readonly" => {
                self.check_declaration(name, args)
            }
            "unset" => {
                for arg in args {
                    match self.arg_literal(*arg)? {
                        Some(option) if option.starts_with('-') => {}
                        _ => self.check_name_arg(*arg)?,
                    }
                }
                Ok(())
            }
            "set" => self.check_set(args),
            _ => Ok(()),
        }
    }

    /// `read [-ers] [-a name] [-d delim] [-i text] [-n n] [-N n] [-p prompt] [-t t] [-u fd] [name…]`.
    fn check_read(&mut self, args: &[Arg<'_>]) -> Checked {
        let mut rest = args.iter();
        let mut options_done = false;
        while let Some(arg) = rest.next() {
            let literal = self.arg_literal(*arg)?;
            match literal.as_deref() {
                Some("--") if !options_done => options_done = true,
                Some(option) if !options_done && option.starts_with('-') && option.len() > 1 => {
                    let flags: Vec<char> = option.chars().skip(1).collect();
                    for (i, flag) in flags.iter().enumerate() {
                        if "adinNptu".contains(*flag) {
                            let attached: String = flags[i + 1..].iter().collect();
                            if *flag == 'a' {
                                if attached.is_empty() {
                                    if let Some(next) = rest.next() {
                                        self.check_name_arg(*next)?;
                                    }
                                } else {
                                    check_variable_name(self, &attached)?;
                                }
                            } else if attached.is_empty() {
                                rest.next();
                            }
                            break;
                        }
                    }
                }
                _ => {
                    options_done = true;
                    self.check_name_arg(*arg)?;
                }
            }
        }
        Ok(())
    }

    /// `declare`/`typeset`/`local`/`export`/`readonly` `[options] [name[=value]…]`.
    fn check_declaration(&mut self, builtin: &str, args: &[Arg<'_>]) -> Checked {
        for arg in args {
            if let Arg::Assignment(assignment, _) = arg {
                check_assigned_name(assignment_base_name(&assignment.name))?;
                continue;
            }
            let Arg::Word(word) = arg else {
                return refuse(format!(
                    "{builtin} with a process substitution as a name cannot be checked"
                ));
            };
            if let Some(option) = self.literal(&word.value)?
                && (option.starts_with('-') || option.starts_with('+'))
                && option.len() > 1
            {
                let declares = matches!(builtin, "declare" | "typeset" | "local");
                if option.starts_with('-') && declares {
                    if option.contains('i') {
                        return refuse(format!(
                            "{builtin} -i cannot be checked: bash evaluates the values of integer variables as arithmetic"
                        ));
                    }
                    if option.contains('n') {
                        return refuse(format!(
                            "{builtin} -n (a name reference) cannot be checked"
                        ));
                    }
                }
                continue;
            }
            let name = self.name_before_equals(word)?;
            check_variable_name(self, &name)?;
        }
        Ok(())
    }

    /// `set`: refuses `-k`/`-o keyword` (which turns arguments into assignments), and
    /// arguments the policy cannot read before `--`.
    fn check_set(&mut self, args: &[Arg<'_>]) -> Checked {
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let Some(option) = self.arg_literal(*arg)? else {
                return refuse(
                    "set with a variable argument before -- cannot be checked (it may be an option)",
                );
            };
            if option == "--" || option == "-" {
                return Ok(());
            }
            if option.starts_with('-') && option[1..].contains('k') {
                return refuse("set -k cannot be checked: it turns arguments into assignments");
            }
            if (option.starts_with('-') || option.starts_with('+')) && option[1..].contains('o') {
                match rest
                    .next()
                    .map(|next| self.arg_literal(*next))
                    .transpose()?
                {
                    Some(Some(name)) if name == "keyword" => {
                        return refuse(
                            "set -o keyword cannot be checked: it turns arguments into assignments",
                        );
                    }
                    Some(None) => {
                        return refuse("set -o with a variable option name cannot be checked");
                    }
                    _ => {}
                }
            }
            if !option.starts_with('-') && !option.starts_with('+') {
                // Positional parameters from here on.
                return Ok(());
            }
        }
        Ok(())
    }

    /// A variable name given as an argument (`read NAME`, `printf -v NAME`, …).
    fn check_name_arg(&mut self, arg: Arg<'_>) -> Checked {
        match arg {
            Arg::Word(word) => self.check_name_argument(word),
            Arg::Assignment(assignment, _) => {
                check_assigned_name(assignment_base_name(&assignment.name))
            }
            Arg::ProcessSubstitution => {
                refuse("a process substitution as a variable name cannot be checked")
            }
        }
    }

    fn check_name_argument(&mut self, word: &ast::Word) -> Checked {
        let pieces = self.pieces(&word.value)?;
        if pieces
            .iter()
            .any(|piece| matches!(&piece.piece, WordPiece::Text(text) if has_pattern(text)))
        {
            return refuse(format!(
                "a pattern as a variable name ({}) cannot be checked",
                word.value
            ));
        }
        match literal_of(&pieces) {
            Some(name) => check_variable_name(self, &name),
            None => refuse(format!(
                "a variable as a variable name ({}) cannot be checked",
                word.value
            )),
        }
    }

    /// The name part of `name=value` (literal), or the whole word when it has no `=`.
    fn name_before_equals(&mut self, word: &ast::Word) -> Result<String, Refusal> {
        let pieces = self.pieces(&word.value)?;
        let mut name = String::new();
        for piece in &pieces {
            let text = match &piece.piece {
                WordPiece::Text(text) => {
                    if let Some((before, _)) = text.split_once('=') {
                        name.push_str(before);
                        return Ok(name);
                    }
                    if has_pattern(text) {
                        return refuse(format!(
                            "a pattern as a variable name ({}) cannot be checked",
                            word.value
                        ));
                    }
                    text.clone()
                }
                other => match literal_piece(other) {
                    Some(text) => {
                        if let Some((before, _)) = text.split_once('=') {
                            name.push_str(before);
                            return Ok(name);
                        }
                        text
                    }
                    None => {
                        return refuse(format!(
                            "a variable as a variable name ({}) cannot be checked",
                            word.value
                        ));
                    }
                },
            };
            name.push_str(&text);
        }
        Ok(name)
    }

    // ---- assignments and redirections -----------------------------------------------------

    fn check_assignment(&mut self, assignment: &ast::Assignment) -> Checked {
        let name = match &assignment.name {
            ast::AssignmentName::VariableName(name) => name,
            ast::AssignmentName::ArrayElementName(name, index) => {
                check_assigned_name(name)?;
                self.check_arithmetic(index)?;
                name
            }
        };
        check_assigned_name(name)?;
        match &assignment.value {
            ast::AssignmentValue::Scalar(value) => {
                self.check_word(value)?;
                if INTEGER_VARIABLES.contains(&name.as_str()) {
                    let number = self.literal(&value.value)?;
                    if !number.is_some_and(|n| is_plain_number(&n)) {
                        return refuse(format!(
                            "assigning {name} anything but a number cannot be checked: bash evaluates it as arithmetic"
                        ));
                    }
                }
            }
            ast::AssignmentValue::Array(elements) => {
                if INTEGER_VARIABLES.contains(&name.as_str()) {
                    return refuse(format!(
                        "assigning {name} an array cannot be checked: bash evaluates it as arithmetic"
                    ));
                }
                for (key, value) in elements {
                    if let Some(key) = key {
                        self.check_arithmetic(&key.value)?;
                    }
                    self.check_word(value)?;
                }
            }
        }
        Ok(())
    }

    fn check_redirect_list(&mut self, redirects: Option<&ast::RedirectList>) -> Checked {
        redirects
            .into_iter()
            .flat_map(|list| list.0.iter())
            .try_for_each(|redirect| self.check_redirect(redirect))
    }

    fn check_redirect(&mut self, redirect: &ast::IoRedirect) -> Checked {
        match redirect {
            ast::IoRedirect::File(_, _, target) => match target {
                ast::IoFileRedirectTarget::Filename(word)
                | ast::IoFileRedirectTarget::Duplicate(word) => self.check_word(word),
                ast::IoFileRedirectTarget::Fd(_) => Ok(()),
                ast::IoFileRedirectTarget::ProcessSubstitution(_, subshell) => {
                    self.check_compound_list(&subshell.list)
                }
            },
            ast::IoRedirect::HereDocument(_, doc) => {
                if !doc.requires_expansion {
                    return Ok(());
                }
                let pieces = word::parse_heredoc(&doc.doc.value, &self.options).or_else(|e| {
                    refuse(format!(
                        "the command cannot be parsed: a here-document: {e}"
                    ))
                })?;
                self.check_pieces(&pieces)
            }
            ast::IoRedirect::HereString(_, word) | ast::IoRedirect::OutputAndError(word, _) => {
                self.check_word(word)
            }
        }
    }

    // ---- [[ … ]] --------------------------------------------------------------------------

    fn check_extended_test(&mut self, expr: &ast::ExtendedTestExpr) -> Checked {
        match expr {
            ast::ExtendedTestExpr::And(left, right) | ast::ExtendedTestExpr::Or(left, right) => {
                self.check_extended_test(left)?;
                self.check_extended_test(right)
            }
            ast::ExtendedTestExpr::Not(inner) | ast::ExtendedTestExpr::Parenthesized(inner) => {
                self.check_extended_test(inner)
            }
            ast::ExtendedTestExpr::UnaryTest(predicate, word) => {
                self.check_word(word)?;
                if matches!(
                    predicate,
                    ast::UnaryPredicate::ShellVariableIsSetAndAssigned
                        | ast::UnaryPredicate::ShellVariableIsSetAndNameRef
                ) {
                    match self.literal(&word.value)? {
                        Some(name) => check_variable_name(self, &name)?,
                        None => {
                            return refuse(format!(
                                "a variable as a variable name ({}) cannot be checked",
                                word.value
                            ));
                        }
                    }
                }
                Ok(())
            }
            ast::ExtendedTestExpr::BinaryTest(predicate, left, right) => {
                self.check_word(left)?;
                self.check_word(right)?;
                if matches!(
                    predicate,
                    ast::BinaryPredicate::ArithmeticEqualTo
                        | ast::BinaryPredicate::ArithmeticNotEqualTo
                        | ast::BinaryPredicate::ArithmeticLessThan
                        | ast::BinaryPredicate::ArithmeticLessThanOrEqualTo
                        | ast::BinaryPredicate::ArithmeticGreaterThan
                        | ast::BinaryPredicate::ArithmeticGreaterThanOrEqualTo
                ) {
                    self.check_arithmetic(&left.value)?;
                    self.check_arithmetic(&right.value)?;
                }
                Ok(())
            }
        }
    }

    // ---- words ----------------------------------------------------------------------------

    fn pieces(&self, text: &str) -> Result<Vec<word::WordPieceWithSource>, Refusal> {
        word::parse(text, &self.options)
            .or_else(|e| refuse(format!("the command cannot be parsed: {e}")))
    }

    /// The word after quote removal, when it has no expansions.
    fn literal(&self, text: &str) -> Result<Option<String>, Refusal> {
        Ok(literal_of(&self.pieces(text)?))
    }

    fn arg_literal(&self, arg: Arg<'_>) -> Result<Option<String>, Refusal> {
        match arg {
            Arg::Word(word) | Arg::Assignment(_, word) => self.literal(&word.value),
            Arg::ProcessSubstitution => Ok(None),
        }
    }

    /// Checks every substitution in a word (arguments, values, targets, patterns).
    fn check_word(&mut self, word: &ast::Word) -> Checked {
        self.check_text(&word.value)
    }

    fn check_text(&mut self, text: &str) -> Checked {
        let pieces = self.pieces(text)?;
        self.check_pieces(&pieces)
    }

    fn check_pieces(&mut self, pieces: &[word::WordPieceWithSource]) -> Checked {
        for piece in pieces {
            match &piece.piece {
                WordPiece::Text(_)
                | WordPiece::SingleQuotedText(_)
                | WordPiece::AnsiCQuotedText(_)
                | WordPiece::EscapeSequence(_)
                | WordPiece::TildeExpansion(_) => {}
                WordPiece::DoubleQuotedSequence(inner)
                | WordPiece::GettextDoubleQuotedSequence(inner) => self.check_pieces(inner)?,
                WordPiece::ParameterExpansion(expr) => self.check_parameter_expr(expr)?,
                WordPiece::CommandSubstitution(source) => self.check_program(source)?,
                WordPiece::BackquotedCommandSubstitution(source) => {
                    self.check_program(&unescape_backquoted(source))?;
                }
                WordPiece::ArithmeticExpression(expr) => self.check_arithmetic(&expr.value)?,
            }
        }
        Ok(())
    }

    /// An operand inside `${…}` (`${x:-operand}`, patterns): inside double quotes bash
    /// treats its single quotes as plain characters, so it is checked both ways.
    fn check_operand(&mut self, text: &str) -> Checked {
        self.check_text(text)?;
        let pieces = word::parse_heredoc(text, &self.options)
            .or_else(|e| refuse(format!("the command cannot be parsed: {e}")))?;
        self.check_pieces(&pieces)
    }

    fn check_parameter_expr(&mut self, expr: &ParameterExpr) -> Checked {
        let (parameter, indirect) = match expr {
            ParameterExpr::Parameter {
                parameter,
                indirect,
            }
            | ParameterExpr::ParameterLength {
                parameter,
                indirect,
            } => (parameter, *indirect),
            ParameterExpr::UseDefaultValues {
                parameter,
                indirect,
                default_value: value,
                ..
            }
            | ParameterExpr::IndicateErrorIfNullOrUnset {
                parameter,
                indirect,
                error_message: value,
                ..
            }
            | ParameterExpr::UseAlternativeValue {
                parameter,
                indirect,
                alternative_value: value,
                ..
            }
            | ParameterExpr::RemoveSmallestSuffixPattern {
                parameter,
                indirect,
                pattern: value,
            }
            | ParameterExpr::RemoveLargestSuffixPattern {
                parameter,
                indirect,
                pattern: value,
            }
            | ParameterExpr::RemoveSmallestPrefixPattern {
                parameter,
                indirect,
                pattern: value,
            }
            | ParameterExpr::RemoveLargestPrefixPattern {
                parameter,
                indirect,
                pattern: value,
            }
            | ParameterExpr::UppercaseFirstChar {
                parameter,
                indirect,
                pattern: value,
            }
            | ParameterExpr::UppercasePattern {
                parameter,
                indirect,
                pattern: value,
            }
            | ParameterExpr::LowercaseFirstChar {
                parameter,
                indirect,
                pattern: value,
            }
            | ParameterExpr::LowercasePattern {
                parameter,
                indirect,
                pattern: value,
            } => {
                if let Some(value) = value {
                    self.check_operand(value)?;
                }
                (parameter, *indirect)
            }
            ParameterExpr::AssignDefaultValues {
                parameter,
                indirect,
                default_value,
                ..
            } => {
                if let Some(value) = default_value {
                    self.check_operand(value)?;
                }
                let name = parameter_name(parameter);
                if let Some(name) = name {
                    check_assigned_name(name)?;
                    if INTEGER_VARIABLES.contains(&name) {
                        return refuse(format!(
                            "assigning {name} with ${{…:=…}} cannot be checked: bash evaluates it as arithmetic"
                        ));
                    }
                }
                (parameter, *indirect)
            }
            ParameterExpr::Substring {
                parameter,
                indirect,
                offset,
                length,
            } => {
                self.check_arithmetic(&offset.value)?;
                if let Some(length) = length {
                    self.check_arithmetic(&length.value)?;
                }
                (parameter, *indirect)
            }
            ParameterExpr::Transform {
                parameter,
                indirect,
                op,
            } => {
                if matches!(op, ParameterTransformOp::PromptExpand) {
                    return refuse("a prompt expansion (${…@P}) runs code the policy cannot check");
                }
                (parameter, *indirect)
            }
            ParameterExpr::ReplaceSubstring {
                parameter,
                indirect,
                pattern,
                replacement,
                ..
            } => {
                self.check_operand(pattern)?;
                if let Some(replacement) = replacement {
                    self.check_operand(replacement)?;
                }
                (parameter, *indirect)
            }
            ParameterExpr::VariableNames { .. } | ParameterExpr::MemberKeys { .. } => return Ok(()),
        };
        if indirect {
            return refuse(
                "an indirect expansion (${!…}) cannot be checked: bash evaluates the name it finds",
            );
        }
        if let Parameter::NamedWithIndex { index, .. } = parameter {
            self.check_arithmetic(index)?;
        }
        Ok(())
    }

    /// The program a command word names, after quote removal; refused when the text alone
    /// does not say.
    fn command_name(&mut self, word: &ast::Word) -> Result<String, Refusal> {
        let text = &word.value;
        if text == "[" {
            // The test builtin; a lone `[` is no pattern.
            return Ok(text.clone());
        }
        let pieces = self.pieces(text)?;
        let mut name = String::new();
        for piece in &pieces {
            match &piece.piece {
                WordPiece::Text(part) => {
                    if has_pattern(part) || part.contains('{') {
                        return refuse(format!(
                            "a pattern in command position ({text}) cannot be checked"
                        ));
                    }
                    name.push_str(part);
                }
                WordPiece::ParameterExpansion(_) => {
                    return refuse(format!(
                        "a variable in command position ({text}) cannot be checked"
                    ));
                }
                WordPiece::CommandSubstitution(_) | WordPiece::BackquotedCommandSubstitution(_) => {
                    return refuse(format!(
                        "a command substitution in command position ({text}) cannot be checked"
                    ));
                }
                WordPiece::ArithmeticExpression(_) => {
                    return refuse(format!(
                        "an arithmetic expansion in command position ({text}) cannot be checked"
                    ));
                }
                WordPiece::TildeExpansion(_) => {
                    return refuse(format!(
                        "a ~ path in command position ({text}) cannot be checked"
                    ));
                }
                WordPiece::DoubleQuotedSequence(inner) => match literal_of(inner) {
                    Some(part) => name.push_str(&part),
                    None => {
                        return refuse(format!(
                            "a variable in command position ({text}) cannot be checked"
                        ));
                    }
                },
                other => match literal_piece(other) {
                    Some(part) => name.push_str(&part),
                    None => {
                        return refuse(format!(
                            "the quoting in command position ({text}) cannot be checked"
                        ));
                    }
                },
            }
        }
        if name.is_empty() {
            return refuse("an empty command name cannot be checked");
        }
        Ok(name)
    }

    // ---- arithmetic -----------------------------------------------------------------------

    /// A command substitution inside arithmetic: refused, naming an unlisted program in it
    /// when there is one (the command is refused either way).
    fn refuse_arithmetic_output(&mut self, source: &str) -> Checked {
        let mark = self.called.len();
        self.check_program(source)?;
        if let Some(name) = self.called[mark..]
            .iter()
            .find(|name| !self.defined.contains(*name))
        {
            return refuse(format!("{name} is not in COMMAND_ALLOWLIST"));
        }
        refuse(
            "arithmetic on a command's output cannot be checked: bash evaluates it as an expression",
        )
    }

    /// Arithmetic may use numbers, operators and `$#`, `$?`, `$$`, `$!`: bash evaluates a
    /// variable's value (or a substitution's output) as an expression, which can run code.
    fn check_arithmetic(&mut self, text: &str) -> Checked {
        let pieces = self.pieces(text)?;
        self.check_arithmetic_pieces(&pieces)
    }

    fn check_arithmetic_pieces(&mut self, pieces: &[word::WordPieceWithSource]) -> Checked {
        for piece in pieces {
            match &piece.piece {
                WordPiece::Text(text)
                | WordPiece::SingleQuotedText(text)
                | WordPiece::AnsiCQuotedText(text)
                | WordPiece::EscapeSequence(text) => {
                    if let Some(name) = arithmetic_variable(text) {
                        return refuse(format!(
                            "arithmetic on a variable ({name}) cannot be checked: bash evaluates its value as an expression"
                        ));
                    }
                }
                WordPiece::TildeExpansion(_) => {}
                WordPiece::DoubleQuotedSequence(inner)
                | WordPiece::GettextDoubleQuotedSequence(inner) => {
                    self.check_arithmetic_pieces(inner)?;
                }
                WordPiece::ParameterExpansion(expr) => {
                    let numeric = matches!(
                        expr,
                        ParameterExpr::Parameter {
                            parameter: Parameter::Special(
                                word::SpecialParameter::LastExitStatus
                                    | word::SpecialParameter::PositionalParameterCount
                                    | word::SpecialParameter::ProcessId
                                    | word::SpecialParameter::LastBackgroundProcessId
                            ),
                            indirect: false,
                        }
                    );
                    if !numeric {
                        return refuse(
                            "arithmetic on a variable cannot be checked: bash evaluates its value as an expression",
                        );
                    }
                }
                WordPiece::CommandSubstitution(source) => {
                    return self.refuse_arithmetic_output(source);
                }
                WordPiece::BackquotedCommandSubstitution(source) => {
                    return self.refuse_arithmetic_output(&unescape_backquoted(source));
                }
                WordPiece::ArithmeticExpression(expr) => self.check_arithmetic(&expr.value)?,
            }
        }
        Ok(())
    }
}

/// The name a parameter expansion assigns to, for `${name:=…}`.
fn parameter_name(parameter: &Parameter) -> Option<&str> {
    match parameter {
        Parameter::Named(name)
        | Parameter::NamedWithIndex { name, .. }
        | Parameter::NamedWithAllIndices { name, .. } => Some(name),
        Parameter::Positional(_) | Parameter::Special(_) => None,
    }
}

fn assignment_base_name(name: &ast::AssignmentName) -> &str {
    match name {
        ast::AssignmentName::VariableName(name)
        | ast::AssignmentName::ArrayElementName(name, _) => name,
    }
}

/// Refuses assigning the variables that decide what runs.
fn check_assigned_name(name: &str) -> Checked {
    if CODE_VARIABLES.contains(&name) {
        return refuse(format!(
            "assigning {name} can change what a command runs, which the policy cannot check"
        ));
    }
    Ok(())
}

/// A literal variable name given to a builtin: `name` or `name[subscript]` (the subscript
/// is arithmetic).
fn check_variable_name(checker: &mut Checker<'_>, name: &str) -> Checked {
    let (base, subscript) = match name.split_once('[') {
        Some((base, rest)) => (base, Some(rest.strip_suffix(']').unwrap_or(rest))),
        None => (name, None),
    };
    check_assigned_name(base)?;
    if INTEGER_VARIABLES.contains(&base) {
        return refuse(format!(
            "assigning {base} cannot be checked: bash evaluates it as arithmetic"
        ));
    }
    if let Some(subscript) = subscript {
        checker.check_arithmetic(subscript)?;
    }
    Ok(())
}

/// The text of a piece with no expansion in it, after quote removal.
fn literal_piece(piece: &WordPiece) -> Option<String> {
    match piece {
        WordPiece::Text(text) | WordPiece::SingleQuotedText(text) => Some(text.clone()),
        // $'…' with escapes would need decoding: treated as not literal.
        WordPiece::AnsiCQuotedText(text) if !text.contains('\\') => Some(text.clone()),
        WordPiece::EscapeSequence(text) => {
            let escaped = text.strip_prefix('\\').unwrap_or(text);
            // A backslash-newline is a line continuation: it disappears.
            Some(if escaped == "\n" {
                String::new()
            } else {
                escaped.to_owned()
            })
        }
        WordPiece::DoubleQuotedSequence(inner) => literal_of(inner),
        _ => None,
    }
}

fn literal_of(pieces: &[word::WordPieceWithSource]) -> Option<String> {
    pieces
        .iter()
        .map(|piece| literal_piece(&piece.piece))
        .collect()
}

/// Whether unquoted text would undergo pathname expansion.
fn has_pattern(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

fn is_plain_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// The first variable name in arithmetic text, if any. Numbers (`10`, `0x1f`, `2#101`) are
/// skipped whole; any other identifier is a variable.
fn arithmetic_variable(text: &str) -> Option<String> {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '#' | '@'))
            {
                chars.next();
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut name = String::from(c);
            while let Some(&next) = chars.peek() {
                if next.is_ascii_alphanumeric() || next == '_' {
                    name.push(next);
                    chars.next();
                } else {
                    break;
                }
            }
            return Some(name);
        }
    }
    None
}

/// Inside backquotes bash removes the backslash before `$`, `` ` `` and `\` before parsing
/// the command (brush has already undone `` \` ``).
fn unescape_backquoted(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && matches!(next, '$' | '\\' | '`')
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CommandPolicy {
        let list: Vec<String> = "git,python3,pytest,ls,cat,grep,wc,head"
            .split(',')
            .map(str::to_owned)
            .collect();
        CommandPolicy::new(&list)
    }

    #[track_caller]
    fn allowed(command: &str) {
        if let Err(refusal) = policy().check(command) {
            panic!("{command:?} was refused: {refusal}");
        }
    }

    /// Refused, with a detail containing `why`.
    #[track_caller]
    fn refused(command: &str, why: &str) {
        match policy().check(command) {
            Ok(()) => panic!("{command:?} was allowed"),
            Err(Refusal(detail)) => assert!(
                detail.contains(why),
                "{command:?} was refused with {detail:?}, expected it to mention {why:?}"
            ),
        }
    }

    const ALLOWED: &[&str] = &[
        "git status",
        "ls -la | grep x | wc -l",
        "git log && ls || cat f; pytest -q",
        "(cd src && ls)",
        "{ ls; cat a; }",
        "for f in *.py; do python3 \"$f\"; done",
        "if git diff --quiet; then echo clean; fi",
        "x=$(git rev-parse HEAD); echo $x",
        "echo \"$(ls | head -1)\"",
        "f() { git status; }; f",
        "FOO=1 git status",
        "'g'it status",
        "g\\it status",
        "\"git\" status",
        "cat <<EOF\nhello $(ls)\nEOF",
        "cd /tmp && pwd",
        "test -f x && cat x",
        "[ -f x ] && cat x",
        "[[ -n $x ]] && ls",
        "ls > out.txt 2>&1",
        "while read l; do echo \"$l\"; done < f",
        "case $x in a) ls;; *) cat f;; esac",
        "echo $((1+2))",
    ];

    #[test]
    fn the_brief_s_allowed_commands_pass() {
        for command in ALLOWED {
            allowed(command);
        }
    }

    #[test]
    fn the_brief_s_refused_commands_fail_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("curl x", "curl is not in COMMAND_ALLOWLIST"),
            ("ls | curl x", "curl is not in COMMAND_ALLOWLIST"),
            ("git status; rm -rf /", "rm is not in COMMAND_ALLOWLIST"),
            ("(rm x)", "rm is not"),
            ("echo $(rm x)", "rm is not"),
            ("echo `rm x`", "rm is not"),
            ("x=$(rm y)", "rm is not"),
            ("cat <(rm x)", "rm is not"),
            ("eval ls", "eval runs code the policy cannot check"),
            (
                "$CMD",
                "a variable in command position ($CMD) cannot be checked",
            ),
            ("\"$CMD\" arg", "a variable in command position"),
            ("$(echo ls)", "a command substitution in command position"),
            ("exec rm", "exec starts rm"),
            ("source ./x.sh", "source runs the file ./x.sh"),
            (". ./x.sh", ". runs the file ./x.sh"),
            ("env ls", "env runs other programs"),
            ("xargs rm", "xargs runs other programs"),
            ("sh -c ls", "sh runs other programs"),
            ("bash -c 'ls'", "bash runs other programs"),
            ("command ls", "command runs another program (ls)"),
            ("nohup ls", "nohup runs other programs"),
            ("timeout 5 ls", "timeout runs other programs"),
            ("f() { rm x; }; f", "rm is not"),
            ("undefined_fn", "undefined_fn is not in COMMAND_ALLOWLIST"),
            ("/bin/rm x", "/bin/rm is not in COMMAND_ALLOWLIST"),
            ("./script.sh", "./script.sh is not in COMMAND_ALLOWLIST"),
            ("ls > $(rm x)", "rm is not"),
            ("ls (", "the command cannot be parsed"),
            ("if then", "the command cannot be parsed"),
            ("cat <<EOF\n$(rm x)\nEOF", "rm is not"),
            ("alias ls=rm; ls", "alias defines commands"),
            ("trap 'rm x' EXIT", "trap runs code"),
        ];
        for (command, why) in cases {
            refused(command, why);
        }
    }

    #[test]
    fn an_empty_policy_allows_everything() {
        let open = CommandPolicy::new(&[]);
        assert!(open.allows_everything());
        assert!(open.programs().is_empty());
        for command in ["curl x", "eval $CMD", "ls (", "rm -rf /"] {
            assert_eq!(open.check(command), Ok(()));
        }
        assert_eq!(open.check_environment(["PATH"]), Ok(()));
        // Blank items are no list either.
        assert!(CommandPolicy::new(&[" ".to_owned(), String::new()]).allows_everything());
    }

    #[test]
    fn the_list_is_trimmed_and_deduplicated() {
        let policy = CommandPolicy::new(&[" git ".to_owned(), "ls".to_owned(), "git".to_owned()]);
        assert!(!policy.allows_everything());
        assert_eq!(policy.programs(), ["git", "ls"]);
    }

    #[test]
    fn a_path_matches_only_when_listed_as_that_path() {
        let policy = CommandPolicy::new(&["/usr/bin/git".to_owned(), "ls".to_owned()]);
        assert_eq!(policy.check("/usr/bin/git status"), Ok(()));
        assert!(
            policy.check("git status").is_err(),
            "the name is not the path"
        );
        assert!(policy.check("/bin/git status").is_err());
        assert!(policy.check("/usr/bin/../bin/git status").is_err());
        assert!(
            policy.check("/bin/ls").is_err(),
            "a listed name does not allow a path"
        );
        assert_eq!(policy.check("ls"), Ok(()));
    }

    #[test]
    fn the_empty_command_runs_nothing() {
        for command in ["", "   ", "\n", "# just a comment"] {
            allowed(command);
        }
    }

    #[test]
    fn the_detail_names_the_program() {
        let refusal = policy()
            .check("git status && curl -s example.com")
            .unwrap_err();
        assert_eq!(refusal.to_string(), "curl is not in COMMAND_ALLOWLIST");
        assert_eq!(refusal.0, "curl is not in COMMAND_ALLOWLIST");
        let _: &dyn std::error::Error = &refusal;
    }

    #[test]
    fn every_place_a_command_can_hide_is_checked() {
        let cases = [
            "ls && rm x",
            "ls || rm x",
            "ls & rm x",
            "ls; rm x",
            "! rm x",
            "time rm x",
            "ls | rm x | cat",
            "{ ls; { rm x; }; }",
            "( { rm x; } )",
            "if rm x; then ls; fi",
            "if ls; then rm x; fi",
            "if ls; then ls; elif rm x; then ls; fi",
            "if ls; then ls; else rm x; fi",
            "while rm x; do ls; done",
            "while ls; do rm x; done",
            "until rm x; do ls; done",
            "for f in a; do rm x; done",
            "for f in $(rm x); do ls; done",
            "for ((1; 0; 1)); do rm x; done",
            "case $(rm x) in a) ls;; esac",
            "case x in $(rm x)) ls;; esac",
            "case x in a) rm x;; esac",
            "f() { rm x; }",
            "function f { rm x; }",
            "f() ( rm x )",
            "f() { ls; } > $(rm x)",
            "coproc rm x",
            "coproc c { rm x; }",
            "echo \"$(rm x)\"",
            "echo \"a`rm x`b\"",
            "echo $(ls $(rm x))",
            "echo `echo \\`rm x\\``",
            "echo `echo \\$(rm x)`",
            "echo ${x:-$(rm x)}",
            "echo \"${x:-\"$(rm x)\"}\"",
            "echo ${x:=$(rm x)}",
            "echo ${x:+`rm x`}",
            "echo ${x:?$(rm x)}",
            "echo ${x#$(rm x)}",
            "echo ${x%%$(rm x)}",
            "echo ${x/$(rm x)/y}",
            "echo ${x/y/$(rm x)}",
            "echo ${x^^$(rm x)}",
            "FOO=$(rm x) ls",
            "a=($(rm x))",
            "export X=$(rm x)",
            "local X=\"$(rm x)\"",
            "ls < $(rm x)",
            "ls >> \"$(rm x)\"",
            "ls &> $(rm x)",
            "ls 2>&$(rm x)",
            "ls <<< $(rm x)",
            "cat <<EOF\n${x:-$(rm x)}\nEOF",
            "cat <<-EOF\n\t`rm x`\nEOF",
            "ls >(rm x)",
            "ls > >(rm x)",
            "ls < <(rm x)",
            "diff <(ls) <(rm x)",
            "[[ $(rm x) == y ]]",
            "[[ -f $(rm x) ]]",
            "[[ x =~ $(rm x) ]]",
            "[[ ! -n `rm x` ]]",
            "[[ -n x && -n $(rm x) ]]",
            "test -n \"$(rm x)\"",
            "echo $(( $(rm x) ))",
            "(( $(rm x) ))",
            "echo $(echo $(echo $(rm x)))",
            "x=1 y=$(rm x)",
            "cd \"$(rm x)\"",
        ];
        for command in cases {
            refused(command, "rm is not in COMMAND_ALLOWLIST");
        }
    }

    #[test]
    fn what_cannot_be_named_is_refused() {
        let cases: &[(&str, &str)] = &[
            ("${CMD} x", "a variable in command position"),
            ("$1", "a variable in command position"),
            ("\"${CMD:-ls}\"", "a variable in command position"),
            ("g$X", "a variable in command position"),
            ("`echo ls`", "a command substitution in command position"),
            ("$((1))", "an arithmetic expansion in command position"),
            ("~/bin/tool", "a ~ path in command position"),
            ("c*l x", "a pattern in command position"),
            ("l? -la", "a pattern in command position"),
            ("/bin/[r]m x", "a pattern in command position"),
            ("{rm,x}", "a pattern in command position"),
            ("$'\\x72m' x", "the quoting in command position"),
            ("''", "an empty command name"),
            ("\"\" x", "an empty command name"),
            ("FOO=1 $CMD", "a variable in command position"),
        ];
        for (command, why) in cases {
            refused(command, why);
        }
    }

    #[test]
    fn quote_removal_happens_before_the_match() {
        for command in [
            "'git' status",
            "\"g\"it status",
            "g'i't status",
            "\\git status",
            "$'git' status",
        ] {
            allowed(command);
        }
        refused("'r'm x", "rm is not in COMMAND_ALLOWLIST");
        refused("r\\m x", "rm is not in COMMAND_ALLOWLIST");
        // Quoted, the pattern characters are plain text.
        refused("'c*l' x", "c*l is not in COMMAND_ALLOWLIST");
    }

    #[test]
    fn builtins_that_run_nothing_else_need_no_listing() {
        for command in [
            "cd src",
            "echo hi",
            "printf '%s\\n' \"$x\"",
            "true",
            "false",
            ":",
            "test -d x",
            "[ -z \"$x\" ]",
            "export A=1 B",
            "unset A",
            "read -r line < f",
            "set -euo pipefail",
            "set -- a b; shift",
            "exit 0",
            "f() { local x=1; return 0; }; f",
            "declare -a xs",
            "declare -r X=1",
            "typeset -x Y=2",
            "readonly Z",
            "pwd",
            "ls & wait",
            "for i in a b; do break; done",
            "for i in a b; do continue; done",
            "[[ a < b ]]",
            "time ls",
            "! ls",
            "read -p 'name? ' -r name",
            "read -a words",
            "printf -v out %s x",
            "test -v name",
            "[[ -v name ]]",
            "echo ${#x} ${x:-default} ${x#pre} ${x//a/b}",
            "echo ${xs[0]} ${xs[@]} ${!prefix*} ${!xs[@]}",
            "wait -n",
            "command -v git",
            "command -V ls",
            "exec > log 2>&1",
            "exec",
            "set -x; ls",
            "unset -f f",
            "export -n X",
            "echo ~ ~/x",
            "ls -d */",
            "echo {a,b}",
            "cat *.txt",
        ] {
            allowed(command);
        }
    }

    #[test]
    fn builtins_that_run_code_are_refused_unless_listed() {
        let cases: &[(&str, &str)] = &[
            ("eval \"$x\"", "eval runs code"),
            ("builtin echo x", "builtin runs another builtin"),
            ("enable -n echo", "enable can load"),
            ("hash -p /bin/rm ls", "hash can map"),
            ("let x=1", "let evaluates arithmetic"),
            ("mapfile -C f lines < x", "mapfile can run a callback"),
            ("readarray lines < x", "readarray can run a callback"),
            ("shopt -s expand_aliases", "shopt changes"),
            ("fc -s", "fc runs commands"),
            ("bind -x '\"a\":rm'", "bind can bind"),
            ("complete -C rm x", "complete can run"),
            ("compgen -C rm x", "compgen can run"),
            ("source", "source"),
            ("source $F", "source runs a file the policy cannot name"),
            ("exec $CMD", "a variable in command position"),
            ("exec -a name rm", "exec starts rm"),
            ("exec -- rm", "exec starts rm"),
            ("exec echo hi", "exec starts echo"),
            ("command -p rm", "command runs another program (rm)"),
            ("find . -exec rm {} ;", "find runs other programs"),
            ("sudo ls", "sudo runs other programs"),
            ("nice ls", "nice runs other programs"),
        ];
        for (command, why) in cases {
            if *command == "source" {
                // `source` with no file is just an error.
                allowed(command);
                continue;
            }
            refused(command, why);
        }
        allowed("exec ls");
        allowed("exec -a name git status");
    }

    #[test]
    fn listing_a_builtin_or_wrapper_allows_it_whole() {
        let list: Vec<String> = ["eval", "env", "command", "sh", "./x.sh", "ls"]
            .map(str::to_owned)
            .to_vec();
        let policy = CommandPolicy::new(&list);
        for command in [
            "eval \"$x\"",
            "env FOO=1 curl x",
            "command rm x",
            "sh -c 'rm x'",
            "source ./x.sh",
            ". ./x.sh",
            "./x.sh",
        ] {
            assert_eq!(policy.check(command), Ok(()), "{command}");
        }
        // Its substitutions are still checked.
        assert!(policy.check("env $(rm x)").is_err());
        assert!(policy.check("source ./y.sh").is_err());
    }

    #[test]
    fn functions_are_checked_where_they_are_defined() {
        allowed("f() { ls; }; f; f");
        allowed("function g { git status; }; g");
        allowed("f() { g; }; g() { ls; }; f");
        allowed("f() { if [ -n \"$1\" ]; then f; fi; }; f x");
        allowed("ls() { command -v ls; }; ls");
        // Defined but never called: still checked.
        refused("f() { rm x; }; ls", "rm is not in COMMAND_ALLOWLIST");
        refused("command_not_found_handle() { rm x; }; nope", "rm is not");
        refused("f() { ls; }; g", "g is not in COMMAND_ALLOWLIST");
        refused("git() { rm x; }; git", "rm is not");
    }

    #[test]
    fn assignments_to_what_decides_the_program_are_refused() {
        for command in [
            "PATH=. ls",
            "PATH=/tmp:$PATH",
            "export PATH=.",
            "export PATH",
            "declare PATH=.",
            "local PATH=.; ls",
            "readonly PATH",
            "read PATH < f",
            "printf -v PATH %s .",
            "for PATH in .; do ls; done",
            "echo ${PATH:=.}",
            "BASH_CMDS[ls]=/bin/rm; ls",
            "PS4='$(rm x)'; set -x; ls",
            "BASH_ENV=./x.sh git status",
            "LD_PRELOAD=./x.so git status",
            "PROMPT_COMMAND='rm x'",
            "export \"PATH=.\"",
            "echo {PATH}>/dev/null",
        ] {
            refused(command, "can change what a command runs");
        }
        allowed("FOO=. ls");
        allowed("export MY_PATH=.; ls");
    }

    #[test]
    fn arithmetic_on_values_is_refused() {
        // x='a[$(cmd)]'; echo $((x)) runs cmd in bash: the value is code.
        for command in [
            "x='a[$(rm y)]'; echo $((x))",
            "echo $(($x))",
            "echo $((x + 1))",
            "(( x ))",
            "for ((i=0; i<3; i++)); do ls; done",
            "[[ $x -eq 1 ]]",
            "[[ 1 -lt n ]]",
            "echo ${xs[i]}",
            "echo ${xs[$i]}",
            "xs[$i]=1",
            "xs=([$k]=v)",
            "echo ${s:$n:2}",
            "echo $[x]",
            "read 'xs[i]'",
        ] {
            refused(command, "arithmetic");
        }
        refused(
            "echo $(( $(wc -l < f) + 1 ))",
            "arithmetic on a command's output",
        );
        refused("echo $(( $(rm x) ))", "rm is not");
        refused("read 'xs[$(rm y)]'", "rm is not");
        for command in [
            "echo $((1+2))",
            "echo $(( (1 << 4) % 3 ))",
            "echo $((0x1f + 2#101 + 010))",
            "echo $(($# + $? + $$))",
            "(( 1 ))",
            "[[ 1 -eq 1 ]]",
            "echo ${xs[0]} ${xs[-1]}",
            "xs[3]=1",
            "echo ${s:1:2}",
            "RANDOM=42",
        ] {
            allowed(command);
        }
    }

    #[test]
    fn other_runtime_evaluation_is_refused() {
        let cases: &[(&str, &str)] = &[
            ("echo ${!x}", "an indirect expansion"),
            ("echo \"${!name:-x}\"", "an indirect expansion"),
            ("echo ${x@P}", "a prompt expansion"),
            ("declare -n r=x", "-n (a name reference)"),
            ("local -n r=x", "-n (a name reference)"),
            ("declare -i n=x", "declare -i"),
            ("typeset -ai n", "typeset -i"),
            ("declare \"$x\"", "a variable as a variable name"),
            ("export \"$x=1\"", "a variable as a variable name"),
            ("read \"$x\"", "a variable as a variable name"),
            ("read *", "a pattern as a variable name"),
            ("printf -v \"$x\" %s y", "a variable as a variable name"),
            ("printf \"$fmt\" x", "printf with a variable first argument"),
            ("test -v \"$x\"", "a variable as a variable name"),
            ("[ -v \"$x\" ]", "a variable as a variable name"),
            ("[[ -v $x ]]", "a variable as a variable name"),
            ("unset \"$x\"", "a variable as a variable name"),
            ("wait -p \"$x\" -n", "a variable as a variable name"),
            ("RANDOM=$x", "assigning RANDOM anything but a number"),
            (
                "OPTIND='a[$(rm x)]'",
                "assigning OPTIND anything but a number",
            ),
            ("read OPTIND", "assigning OPTIND"),
            ("for RANDOM in 1; do ls; done", "a loop over RANDOM"),
            ("set -k", "set -k"),
            ("set -eko pipefail", "set -k"),
            ("set -o keyword", "set -o keyword"),
            ("set $opts", "set with a variable argument"),
        ];
        for (command, why) in cases {
            refused(command, why);
        }
        allowed("set -- $args");
        allowed("printf '%s' \"$x\"");
    }

    #[test]
    fn the_environment_given_with_a_command_is_checked() {
        let policy = policy();
        assert_eq!(policy.check_environment(["FOO", "LANG"]), Ok(()));
        for name in ["PATH", "BASH_ENV", "PS4", "LD_PRELOAD", "BASH_FUNC_ls%%"] {
            let refusal = policy.check_environment([name]).unwrap_err();
            assert!(refusal.0.contains(name), "{refusal}");
        }
    }

    #[test]
    fn unparsable_input_is_refused() {
        for command in [
            "ls (",
            "if then",
            "echo \"unterminated",
            "echo $(ls",
            "case x in",
            "fi",
            "ls |",
            "&& ls",
            "f() {",
        ] {
            refused(command, "the command cannot be parsed");
        }
    }

    #[test]
    fn corners_of_the_syntax() {
        // What bash would run is what is checked.
        refused("echo \"${x:-'$(rm x)'}\"", "rm is not"); // '' are plain inside "${…}"
        // Outside "…" those quotes do quote, but the operand is checked both ways.
        refused("echo ${x:-'$(rm x)'}", "rm is not");
        allowed("cat <<'EOF'\n$(rm x)\nEOF"); // a quoted delimiter expands nothing
        refused("cat <<EOF\n`rm x`\nEOF", "rm is not");
        allowed("ls # $(rm x)");
        refused("ls\\\nrm x", "lsrm is not"); // a line continuation joins the words
        allowed("l\\\ns -la");
        refused("command rm -v", "command runs another program (rm)");
        refused(
            "exec >(rm x)",
            "exec starts a program the policy cannot name",
        );
        allowed("coproc ls");
        allowed("coproc NAME { ls; }");
        allowed("echo $( (ls) ) $(< f)");
        allowed("case x in a) ls;& b) cat f;; esac");
        // bash runs `((./1) )` and `$((./1) )` as subshells, not arithmetic.
        refused("((./1) )", "cannot be parsed reliably");
        refused("( (./1) )", "cannot be parsed reliably");
        refused("echo $((./1) )", "./1 is not in COMMAND_ALLOWLIST");
        allowed("(( (1) + (2) ))");
        // `{NAME}>file` assigns NAME.
        refused("echo {PATH}>/dev/null; ls", "assigning PATH");
        allowed("echo {fd}>/dev/null");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut command = "ls".to_owned();
        for _ in 0..40 {
            command = format!("echo $({command})");
        }
        refused(&command, "too deeply");
    }
}
