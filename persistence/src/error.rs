//! Error types: one enum per operation, so a caller can match on what it can act on.
//!
//! [`StoreError`] is the shared "the database itself failed" case every operation can hit.

use std::path::PathBuf;

use thiserror::Error;

/// The database failed underneath an operation: I/O, a corrupt record, a storage limit.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database")]
    Db(#[from] redb::Error),
    #[error("corrupt record in table `{table}`: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("cannot encode record: {0}")]
    Encode(String),
    #[error("id counter `{0}` exhausted")]
    IdsExhausted(&'static str),
}

impl StoreError {
    pub(crate) fn corrupt(table: &'static str, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            table,
            reason: reason.into(),
        }
    }
}

/// Lets `?` lift any redb error into [`StoreError`] and, through it, into an operation error.
macro_rules! from_redb {
    ($($target:ty),* $(,)?) => {$(
        impl From<redb::TransactionError> for $target {
            fn from(e: redb::TransactionError) -> Self { StoreError::Db(e.into()).into() }
        }
        impl From<redb::TableError> for $target {
            fn from(e: redb::TableError) -> Self { StoreError::Db(e.into()).into() }
        }
        impl From<redb::StorageError> for $target {
            fn from(e: redb::StorageError) -> Self { StoreError::Db(e.into()).into() }
        }
        impl From<redb::CommitError> for $target {
            fn from(e: redb::CommitError) -> Self { StoreError::Db(e.into()).into() }
        }
        impl From<redb::SetDurabilityError> for $target {
            fn from(e: redb::SetDurabilityError) -> Self { StoreError::Db(e.into()).into() }
        }
    )*};
}

from_redb!(
    StoreError,
    RegisterError,
    LoginError,
    AccountUpdateError,
    ChangeEmailError,
    ChangePasswordError,
    CreateAvatarError,
    AvatarUpdateError,
    CreateSceneError,
    SaveError,
    LoadError,
    ImportError,
);

/// Opening a database.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not exist")]
    NotFound { path: PathBuf },
    #[error("{path} is not a Tessera database: {reason}")]
    NotADatabase { path: PathBuf, reason: String },
    #[error("{path} is already open in another process")]
    AlreadyOpen { path: PathBuf },
    #[error(
        "{path} was written by schema version {found}; this build reads up to {supported} — use a newer tessera"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u16,
    },
    #[error("migrating {path} from schema {from}: {source}")]
    Migration {
        path: PathBuf,
        from: u64,
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An email address that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EmailError {
    #[error("email is empty")]
    Empty,
    #[error("email is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("email must have one `@` with text on both sides")]
    Shape,
    #[error("email may only use printable ASCII without spaces")]
    Characters,
    #[error("email domain must be dot-separated labels of letters, digits and `-`")]
    Domain,
}

/// A password that breaks the policy.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PasswordError {
    #[error("password must have at least {min} characters")]
    TooShort { min: usize },
    #[error("password must have at most {max} characters")]
    TooLong { max: usize },
    #[error("password must not contain control characters")]
    Characters,
    #[error("password must not be the email address")]
    SameAsEmail,
}

/// A name (nickname, avatar name, figure, scene name, address) that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("{field} must have at least {min} characters")]
    TooShort { field: &'static str, min: usize },
    #[error("{field} must have at most {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("{field}: {rule}")]
    Characters {
        field: &'static str,
        rule: &'static str,
    },
}

/// Hashing or verifying a password failed (not "wrong password": that is a `false`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("stored password hash is malformed: {0}")]
    MalformedHash(String),
}

/// Registering an account.
#[derive(Debug, Error)]
pub enum RegisterError {
    #[error("invalid email")]
    InvalidEmail(#[from] EmailError),
    #[error("invalid password")]
    InvalidPassword(#[from] PasswordError),
    #[error("invalid nickname")]
    InvalidNickname(#[from] NameError),
    #[error("an account with email {email} already exists")]
    DuplicateEmail { email: String },
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checking an email and password.
#[derive(Debug, Error)]
pub enum LoginError {
    #[error("invalid email")]
    InvalidEmail(#[from] EmailError),
    /// Too long to be any account's password; refused before hashing.
    #[error("invalid password")]
    InvalidPassword(#[from] PasswordError),
    #[error("invalid login address")]
    InvalidAddress(#[from] NameError),
    #[error("no account with that email")]
    UnknownEmail,
    #[error("wrong password")]
    WrongPassword,
    #[error("account is locked")]
    Locked,
    #[error("account is deleted")]
    Deleted,
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Locking, unlocking, deleting an account, or recording a login.
#[derive(Debug, Error)]
pub enum AccountUpdateError {
    #[error("no account {0}")]
    UnknownAccount(u64),
    #[error("no account with that email")]
    UnknownEmail,
    #[error("invalid email")]
    InvalidEmail(#[from] EmailError),
    #[error("account {0} is deleted")]
    Deleted(u64),
    #[error("invalid login address")]
    InvalidAddress(#[from] NameError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Changing an account's email.
#[derive(Debug, Error)]
pub enum ChangeEmailError {
    #[error("no account {0}")]
    UnknownAccount(u64),
    #[error("account {0} is deleted")]
    Deleted(u64),
    #[error("invalid email")]
    InvalidEmail(#[from] EmailError),
    #[error("an account with email {email} already exists")]
    DuplicateEmail { email: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Changing an account's password.
#[derive(Debug, Error)]
pub enum ChangePasswordError {
    #[error("no account {0}")]
    UnknownAccount(u64),
    #[error("account {0} is deleted")]
    Deleted(u64),
    #[error("current password is wrong")]
    WrongPassword,
    #[error("invalid new password")]
    InvalidPassword(#[from] PasswordError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creating avatars.
#[derive(Debug, Error)]
pub enum CreateAvatarError {
    #[error("no account {0}")]
    UnknownAccount(u64),
    #[error("account {0} is not open")]
    AccountNotOpen(u64),
    #[error("account {account} already has {max} avatars")]
    TooManyAvatars { account: u64, max: usize },
    #[error("invalid avatar name")]
    InvalidName(#[source] NameError),
    #[error("invalid figure")]
    InvalidFigure(#[source] NameError),
    #[error("avatar name {name} is taken")]
    DuplicateName { name: String },
    #[error("no scene {0}")]
    UnknownScene(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Deleting an avatar or moving it to another scene.
#[derive(Debug, Error)]
pub enum AvatarUpdateError {
    #[error("no avatar {0}")]
    UnknownAvatar(u64),
    #[error("avatar {0} is deleted")]
    Deleted(u64),
    #[error("no scene {0}")]
    UnknownScene(u64),
    /// The state avatar {0} was to arrive with is not finite or names another scene.
    #[error("avatar {0}'s arrival state is not finite or names another scene")]
    BadState(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creating a scene.
#[derive(Debug, Error)]
pub enum CreateSceneError {
    #[error("invalid scene name")]
    InvalidName(#[from] NameError),
    #[error("scene {name} already exists")]
    DuplicateName { name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Saving a batch of PC states.
#[derive(Debug, Error)]
pub enum SaveError {
    /// The batch names a scene that does not exist: nothing of the call was written.
    #[error("no scene {0}")]
    UnknownScene(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Loading a scene's PC states.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("no scene {0}")]
    UnknownScene(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Importing an export.
#[derive(Debug, Error)]
pub enum ImportError {
    #[error("the target database is not empty ({0}); import only into a new database")]
    NotEmpty(String),
    #[error("the first record must be the header")]
    MissingHeader,
    #[error("export is from schema {found}; this build imports up to {supported}")]
    NewerSchema { found: u16, supported: u16 },
    #[error("invalid record: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An error and its sources, `: `-separated, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
