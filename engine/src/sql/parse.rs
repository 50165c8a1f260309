//! Splits the dialect into KalamDB's own statements (namespaces, users, SHOW,
//! DESCRIBE) and standard SQL left to `sqlparser`'s AST.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, Ident, ObjectName, ObjectNamePart, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use kalamdb_auth::identity::Role;

use crate::error::{EngineError, Result};
use crate::ids::{ColumnName, IndexName, NamespaceId, TableId, TableName};

/// Deeply nested input is refused before it can exhaust the stack.
const RECURSION_LIMIT: usize = 64;
/// The deepest nesting of expressions and subqueries a statement may have. The parser
/// builds a chain of binary operators (`1+1+...`, `a AND b AND ...`, `x || y || ...`)
/// without recursing, as a tree as deep as the chain is long; everything after it
/// (planning, optimizing, evaluating, our row expressions) recurses over that tree, so
/// deeper statements are refused here, before any of it runs.
pub const MAX_EXPRESSION_DEPTH: usize = 256;
/// Statements longer than this are parsed on a stack sized for them: a refused chain
/// is still a tree as deep as it is long, and dropping it recurses once per level.
const LONG_STATEMENT_BYTES: usize = 4096;
/// Stack per byte of a long statement: one level of the tree takes at least two bytes
/// of text (`+1`), and dropping a level takes well under this much stack.
const STACK_PER_BYTE: usize = 128;
/// The longest statement parsed: its stack (128 bytes per byte, reserved, touched only
/// as deep as the text nests) stays within what a machine can map. Requests over HTTP
/// are bounded far below by `max_body_bytes`.
pub const MAX_STATEMENT_BYTES: usize = 16 << 20;
/// The least stack a long statement is parsed on: the parser's own recursion, up to
/// its limit, takes a few megabytes (its frames are large). Only touched pages cost.
const PARSE_STACK_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum UserChange {
    Password(String),
    Role(Role),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    CreateNamespace {
        name: NamespaceId,
        if_not_exists: bool,
    },
    DropNamespace {
        name: NamespaceId,
        if_exists: bool,
        cascade: bool,
    },
    CreateUser {
        name: String,
        password: Option<String>,
        role: Role,
        if_not_exists: bool,
    },
    AlterUser {
        name: String,
        change: UserChange,
    },
    DropUser {
        name: String,
        if_exists: bool,
    },
    ShowNamespaces,
    ShowTables {
        namespace: Option<NamespaceId>,
    },
    DescribeTable {
        table: TableId,
    },
    FlushTable {
        table: TableId,
    },
    /// Every flushable table, or those of one namespace.
    FlushAll {
        namespace: Option<NamespaceId>,
    },
    CompactTable {
        table: TableId,
    },
    KillJob {
        id: String,
    },
    CreateIndex {
        name: IndexName,
        table: TableId,
        /// Columns and whether each is descending.
        columns: Vec<(ColumnName, bool)>,
        unique: bool,
        if_not_exists: bool,
    },
    DropIndex {
        namespace: NamespaceId,
        name: IndexName,
        if_exists: bool,
    },
    ShowIndexes {
        table: Option<TableId>,
    },
    Sql(Box<ast::Statement>),
}

fn syntax(e: ParserError) -> EngineError {
    EngineError::Syntax(match e {
        ParserError::RecursionLimitExceeded => "statement is nested too deeply".to_string(),
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
    })
}

fn word(p: &Parser, n: usize) -> Option<String> {
    match p.peek_nth_token(n).token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

fn is_words(p: &Parser, words: &[&str]) -> bool {
    words.iter().enumerate().all(|(i, w)| word(p, i).as_deref() == Some(*w))
}

fn skip(p: &mut Parser, n: usize) {
    for _ in 0..n {
        p.next_token();
    }
}

fn expect_end(p: &mut Parser) -> Result<()> {
    while p.consume_token(&Token::SemiColon) {}
    match p.peek_token().token {
        Token::EOF => Ok(()),
        other => Err(EngineError::Syntax(format!(
            "unexpected '{other}' after the end of the statement (one statement per request)"
        ))),
    }
}

/// An identifier or a quoted string (user names may be given either way).
fn name_or_string(p: &mut Parser) -> Result<String> {
    if let Token::SingleQuotedString(s) = p.peek_token().token {
        p.next_token();
        return Ok(s);
    }
    Ok(p.parse_identifier().map_err(syntax)?.value)
}

fn parse_role(p: &mut Parser) -> Result<Role> {
    let r = name_or_string(p)?;
    r.parse::<Role>().map_err(EngineError::from)
}

pub fn ident_name(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

/// `ns.table` or `table` (in `public`).
pub fn table_id(name: &ObjectName) -> Result<TableId> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Ok(ident_name(i)),
            _ => Err(EngineError::Syntax(format!("unsupported table name '{name}'"))),
        })
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [t] => Ok(TableId::new(NamespaceId::public(), TableName::parse(t)?)),
        [ns, t] => Ok(TableId::new(NamespaceId::parse(ns)?, TableName::parse(t)?)),
        _ => Err(EngineError::Syntax(format!(
            "table name '{name}' has too many parts: use namespace.table"
        ))),
    }
}

/// `CURRENT_USER` is a keyword without parentheses in standard SQL; the dialect also
/// accepts it as `CURRENT_USER()`, like its other built-in functions.
fn normalize_tokens(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let significant = |t: &TokenWithSpan| !matches!(t.token, Token::Whitespace(_));
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        out.push(t.clone());
        i += 1;
        if matches!(&t.token, Token::Word(w) if w.keyword == Keyword::CURRENT_USER && w.quote_style.is_none()) {
            let rest: Vec<usize> = (i..tokens.len()).filter(|&j| significant(&tokens[j])).take(2).collect();
            if let [a, b] = rest[..]
                && tokens[a].token == Token::LParen
                && tokens[b].token == Token::RParen
            {
                i = b + 1;
            }
        }
    }
    out
}

/// Parses one statement, refusing one nested deeper than [`MAX_EXPRESSION_DEPTH`].
pub fn parse(sql: &str) -> Result<Statement> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(EngineError::PayloadTooLarge(format!(
            "the statement is {} bytes; at most {MAX_STATEMENT_BYTES} are parsed",
            sql.len()
        )));
    }
    if sql.len() <= LONG_STATEMENT_BYTES {
        return parse_bounded(sql);
    }
    // a refused tree is dropped inside, on the grown stack
    stacker::grow((sql.len() * STACK_PER_BYTE).max(PARSE_STACK_BYTES), || {
        parse_bounded(sql)
    })
}

fn parse_bounded(sql: &str) -> Result<Statement> {
    let stmt = parse_statement(sql)?;
    if let Statement::Sql(ast) = &stmt {
        check_depth(ast)?;
    }
    Ok(stmt)
}

/// Counts nesting on the way down and stops at the bound, so that the walk itself
/// recurses no deeper than the bound.
struct DepthBound {
    depth: usize,
}

impl DepthBound {
    fn enter(&mut self) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth > MAX_EXPRESSION_DEPTH {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn leave(&mut self) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Why the walk over a statement stopped.
enum Refused {
    TooDeep,
    /// A subquery used as a value that selects no column (DataFusion's planner
    /// indexes its first column).
    EmptySubquery,
}

/// Whether a query selects no column at all.
fn selects_nothing(q: &ast::Query) -> bool {
    matches!(q.body.as_ref(), ast::SetExpr::Select(s) if s.projection.is_empty())
}

impl Visitor for DepthBound {
    type Break = Refused;

    fn pre_visit_expr(&mut self, e: &ast::Expr) -> ControlFlow<Refused> {
        if let ast::Expr::Subquery(q) | ast::Expr::InSubquery { subquery: q, .. } = e
            && selects_nothing(q)
        {
            return ControlFlow::Break(Refused::EmptySubquery);
        }
        self.enter().map_break(|()| Refused::TooDeep)
    }

    fn post_visit_expr(&mut self, _: &ast::Expr) -> ControlFlow<Refused> {
        self.leave().map_break(|()| Refused::TooDeep)
    }

    fn pre_visit_query(&mut self, _: &ast::Query) -> ControlFlow<Refused> {
        self.enter().map_break(|()| Refused::TooDeep)
    }

    fn post_visit_query(&mut self, _: &ast::Query) -> ControlFlow<Refused> {
        self.leave().map_break(|()| Refused::TooDeep)
    }
}

fn check_depth(stmt: &ast::Statement) -> Result<()> {
    match stmt.visit(&mut DepthBound { depth: 0 }) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(Refused::TooDeep) => Err(EngineError::TooDeep(format!(
            "the statement nests expressions more than {MAX_EXPRESSION_DEPTH} levels deep \
             (a chain of operators counts one level per operator)"
        ))),
        ControlFlow::Break(Refused::EmptySubquery) => Err(EngineError::InvalidInput(
            "a subquery used as a value must select a column".into(),
        )),
    }
}

/// How deep keyword constructs may nest: `CASE ... END`, and brackets right after a
/// keyword (`CAST(`, `ARRAY[`, `IN (`, `EXISTS (`, `max(`). When one of these fails to
/// parse, the parser tries its keyword again as a plain identifier, so a malformed
/// nest of them costs time doubling with each level (18 nested `CAST(` take a second,
/// 64 would take forever); at this depth the worst case is a few milliseconds.
pub const MAX_KEYWORD_NESTING: usize = 10;

/// Refuses nesting the parser would take too long or too deep a stack for, before the
/// parser sees it: brackets nested deeper than the parser's recursion limit (not every
/// path through the parser counts its recursion, and its frames are large), and
/// keyword constructs nested deeper than [`MAX_KEYWORD_NESTING`].
fn check_nesting(tokens: &[TokenWithSpan]) -> Result<()> {
    let too_deep = |what: &str, limit: usize| {
        Err(EngineError::TooDeep(format!(
            "the statement nests {what} more than {limit} levels deep"
        )))
    };
    // one entry per open bracket: whether a keyword opened it
    let mut brackets: Vec<bool> = Vec::new();
    let (mut keyword_brackets, mut cases) = (0usize, 0usize);
    let mut after_keyword = false;
    for t in tokens {
        match &t.token {
            Token::Whitespace(_) => continue,
            Token::LParen | Token::LBracket | Token::LBrace => {
                brackets.push(after_keyword);
                keyword_brackets += usize::from(after_keyword);
                if brackets.len() > RECURSION_LIMIT {
                    return too_deep("parentheses", RECURSION_LIMIT);
                }
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                let by_keyword = brackets.pop() == Some(true);
                keyword_brackets -= usize::from(by_keyword);
            }
            Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::CASE => cases += 1,
            Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::END => cases = cases.saturating_sub(1),
            _ => {}
        }
        if keyword_brackets + cases > MAX_KEYWORD_NESTING {
            return too_deep(
                "CASE and keyword constructs (CAST(, ARRAY[, IN (...)",
                MAX_KEYWORD_NESTING,
            );
        }
        after_keyword =
            matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.keyword != Keyword::NoKeyword);
    }
    Ok(())
}

fn parse_statement(sql: &str) -> Result<Statement> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| EngineError::Syntax(e.to_string()))?;
    check_nesting(&tokens)?;
    let mut p = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(normalize_tokens(tokens));
    if matches!(p.peek_token().token, Token::EOF) {
        return Err(EngineError::Syntax("empty statement".into()));
    }
    let stmt = if is_words(&p, &["CREATE", "NAMESPACE"]) {
        skip(&mut p, 2);
        let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = NamespaceId::parse(&ident_name(&p.parse_identifier().map_err(syntax)?))?;
        Statement::CreateNamespace { name, if_not_exists }
    } else if is_words(&p, &["DROP", "NAMESPACE"]) {
        skip(&mut p, 2);
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = NamespaceId::parse(&ident_name(&p.parse_identifier().map_err(syntax)?))?;
        let cascade = p.parse_keyword(Keyword::CASCADE);
        Statement::DropNamespace {
            name,
            if_exists,
            cascade,
        }
    } else if is_words(&p, &["CREATE", "USER"]) {
        skip(&mut p, 2);
        let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = name_or_string(&mut p)?;
        let _ = p.parse_keyword(Keyword::WITH);
        let (mut password, mut role) = (None, Role::User);
        loop {
            if p.parse_keyword(Keyword::PASSWORD) {
                password = Some(p.parse_literal_string().map_err(syntax)?);
            } else if p.parse_keyword(Keyword::ROLE) {
                role = parse_role(&mut p)?;
            } else {
                break;
            }
        }
        Statement::CreateUser {
            name,
            password,
            role,
            if_not_exists,
        }
    } else if is_words(&p, &["ALTER", "USER"]) {
        skip(&mut p, 2);
        let name = name_or_string(&mut p)?;
        if !p.parse_keyword(Keyword::SET) {
            return Err(EngineError::Syntax(
                "expected SET PASSWORD '...' or SET ROLE ... after ALTER USER name".into(),
            ));
        }
        let change = if p.parse_keyword(Keyword::PASSWORD) {
            UserChange::Password(p.parse_literal_string().map_err(syntax)?)
        } else if p.parse_keyword(Keyword::ROLE) {
            UserChange::Role(parse_role(&mut p)?)
        } else {
            return Err(EngineError::Syntax("expected PASSWORD or ROLE after SET".into()));
        };
        Statement::AlterUser { name, change }
    } else if is_words(&p, &["DROP", "USER"]) {
        skip(&mut p, 2);
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = name_or_string(&mut p)?;
        Statement::DropUser { name, if_exists }
    } else if is_words(&p, &["SHOW", "NAMESPACES"]) {
        skip(&mut p, 2);
        Statement::ShowNamespaces
    } else if is_words(&p, &["SHOW", "TABLES"]) {
        skip(&mut p, 2);
        let namespace = if p.parse_keyword(Keyword::IN) || p.parse_keyword(Keyword::FROM) {
            Some(NamespaceId::parse(&ident_name(&p.parse_identifier().map_err(syntax)?))?)
        } else {
            None
        };
        Statement::ShowTables { namespace }
    } else if word(&p, 0).is_some_and(|w| w == "DESCRIBE" || w == "DESC") {
        skip(&mut p, 1);
        let _ = p.parse_keyword(Keyword::TABLE);
        let name = p.parse_object_name(false).map_err(syntax)?;
        Statement::DescribeTable {
            table: table_id(&name)?,
        }
    } else if is_words(&p, &["FLUSH", "ALL"]) {
        skip(&mut p, 2);
        let namespace = if p.parse_keyword(Keyword::IN) {
            Some(NamespaceId::parse(&ident_name(&p.parse_identifier().map_err(syntax)?))?)
        } else {
            None
        };
        Statement::FlushAll { namespace }
    } else if is_words(&p, &["FLUSH", "TABLE"]) || is_words(&p, &["COMPACT", "TABLE"]) {
        let flush = word(&p, 0).as_deref() == Some("FLUSH");
        skip(&mut p, 2);
        let table = table_id(&p.parse_object_name(false).map_err(syntax)?)?;
        if flush {
            Statement::FlushTable { table }
        } else {
            Statement::CompactTable { table }
        }
    } else if is_words(&p, &["CREATE", "INDEX"]) || is_words(&p, &["CREATE", "UNIQUE", "INDEX"]) {
        let unique = word(&p, 1).as_deref() == Some("UNIQUE");
        skip(&mut p, if unique { 3 } else { 2 });
        let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = IndexName::parse(&ident_name(&p.parse_identifier().map_err(syntax)?))?;
        if !p.parse_keyword(Keyword::ON) {
            return Err(EngineError::Syntax("expected ON <table> after the index name".into()));
        }
        let table = table_id(&p.parse_object_name(false).map_err(syntax)?)?;
        p.expect_token(&Token::LParen).map_err(syntax)?;
        let mut columns = vec![];
        loop {
            let col = ColumnName::parse(&ident_name(&p.parse_identifier().map_err(syntax)?))?;
            let descending = if p.parse_keyword(Keyword::DESC) {
                true
            } else {
                let _ = p.parse_keyword(Keyword::ASC);
                false
            };
            columns.push((col, descending));
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        p.expect_token(&Token::RParen).map_err(syntax)?;
        Statement::CreateIndex {
            name,
            table,
            columns,
            unique,
            if_not_exists,
        }
    } else if is_words(&p, &["DROP", "INDEX"]) {
        skip(&mut p, 2);
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        // an index is named like a table: `ns.name`, or `name` in `public`
        let qualified = table_id(&p.parse_object_name(false).map_err(syntax)?)?;
        Statement::DropIndex {
            namespace: qualified.namespace,
            name: IndexName::parse(qualified.table.as_str())?,
            if_exists,
        }
    } else if is_words(&p, &["SHOW", "INDEXES"]) || is_words(&p, &["SHOW", "INDEX"]) {
        skip(&mut p, 2);
        let table = if p.parse_keyword(Keyword::ON) || p.parse_keyword(Keyword::FROM) {
            Some(table_id(&p.parse_object_name(false).map_err(syntax)?)?)
        } else {
            None
        };
        Statement::ShowIndexes { table }
    } else if is_words(&p, &["KILL", "JOB"]) {
        skip(&mut p, 2);
        let id = match p.next_token().token {
            Token::SingleQuotedString(s) => s,
            Token::Word(w) => w.value,
            other => {
                return Err(EngineError::Syntax(format!(
                    "expected a job id after KILL JOB, found '{other}'"
                )));
            }
        };
        Statement::KillJob { id }
    } else {
        Statement::Sql(Box::new(p.parse_statement().map_err(syntax)?))
    };
    expect_end(&mut p)?;
    Ok(stmt)
}

/// Splits a script into statements at top-level `;`, respecting quotes and `--`
/// comments. Empty statements are dropped.
pub fn split_script(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    if chars.peek() == Some(&q) {
                        cur.push(chars.next().unwrap_or(q));
                    } else {
                        quote = None;
                    }
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for n in chars.by_ref() {
                        if n == '\n' {
                            cur.push('\n');
                            break;
                        }
                    }
                }
                ';' => {
                    if !cur.trim().is_empty() {
                        out.push(cur.trim().to_string());
                    }
                    cur.clear();
                }
                _ => cur.push(c),
            },
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests;
