//! Input rules for everything a client or operator types. Limits are in bytes or chars as
//! named, and are checked before anything is hashed or stored.

use crate::error::{EmailError, NameError, PasswordError};

pub const EMAIL_MAX_BYTES: usize = 254;
pub const EMAIL_LOCAL_MAX_BYTES: usize = 64;
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;
pub const NICKNAME_MAX_CHARS: usize = 32;
pub const AVATAR_NAME_MIN_CHARS: usize = 3;
pub const AVATAR_NAME_MAX_CHARS: usize = 16;
pub const FIGURE_MAX_CHARS: usize = 64;
pub const SCENE_NAME_MAX_CHARS: usize = 64;
pub const ADDRESS_MAX_CHARS: usize = 64;
/// Most bytes of the game fields of one PC state or one scene object (names and values):
/// a scene saves far less (`tessera_sim::persist_game`); the store refuses more.
pub const MAX_GAME_BYTES: usize = 16 * 1024;

/// Whether `fields` are within [`MAX_GAME_BYTES`].
pub fn game_fits(fields: &[crate::types::GameField]) -> bool {
    fields
        .iter()
        .map(|f| f.name.len() + f.bytes.len())
        .sum::<usize>()
        <= MAX_GAME_BYTES
}
/// How many avatars `create_avatar` lets one account have.
pub const MAX_AVATARS_PER_ACCOUNT: usize = 8;

/// Trims and lower-cases an email, then checks its shape. Returns the normalised form.
pub fn normalize_email(raw: &str) -> Result<String, EmailError> {
    let email = raw.trim();
    if email.is_empty() {
        return Err(EmailError::Empty);
    }
    if email.len() > EMAIL_MAX_BYTES {
        return Err(EmailError::TooLong {
            max: EMAIL_MAX_BYTES,
        });
    }
    if !email.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(EmailError::Characters);
    }
    let email = email.to_ascii_lowercase();
    let Some((local, domain)) = email.split_once('@') else {
        return Err(EmailError::Shape);
    };
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err(EmailError::Shape);
    }
    if local.len() > EMAIL_LOCAL_MAX_BYTES {
        return Err(EmailError::TooLong {
            max: EMAIL_LOCAL_MAX_BYTES,
        });
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(EmailError::Domain);
    }
    Ok(email)
}

/// The length check alone: used at login, where a too-long password can match nothing and
/// must not cost a hash.
pub fn check_password_length(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() > PASSWORD_MAX_CHARS {
        return Err(PasswordError::TooLong {
            max: PASSWORD_MAX_CHARS,
        });
    }
    Ok(())
}

/// The password policy for new passwords: 8 to 128 characters, no control characters,
/// not the account's own email.
pub fn check_password(password: &str, email: &str) -> Result<(), PasswordError> {
    check_password_length(password)?;
    if password.chars().count() < PASSWORD_MIN_CHARS {
        return Err(PasswordError::TooShort {
            min: PASSWORD_MIN_CHARS,
        });
    }
    if password.chars().any(char::is_control) {
        return Err(PasswordError::Characters);
    }
    if password.trim().eq_ignore_ascii_case(email) {
        return Err(PasswordError::SameAsEmail);
    }
    Ok(())
}

fn check_text(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), NameError> {
    let n = value.chars().count();
    if n < min {
        return Err(NameError::TooShort { field, min });
    }
    if n > max {
        return Err(NameError::TooLong { field, max });
    }
    if value.chars().any(char::is_control) {
        return Err(NameError::Characters {
            field,
            rule: "no control characters",
        });
    }
    if value.trim() != value {
        return Err(NameError::Characters {
            field,
            rule: "no leading or trailing spaces",
        });
    }
    Ok(())
}

pub fn check_nickname(nickname: &str) -> Result<(), NameError> {
    check_text("nickname", nickname, 1, NICKNAME_MAX_CHARS)
}

pub fn check_figure(figure: &str) -> Result<(), NameError> {
    check_text("figure", figure, 0, FIGURE_MAX_CHARS)
}

pub fn check_address(address: &str) -> Result<(), NameError> {
    check_text("address", address, 0, ADDRESS_MAX_CHARS)
}

/// Avatar names: 3 to 16 ASCII letters, digits or `_`, starting with a letter. Unique
/// regardless of letter case; [`avatar_name_key`] is the form the uniqueness index holds.
pub fn check_avatar_name(name: &str) -> Result<(), NameError> {
    const FIELD: &str = "avatar name";
    check_text(FIELD, name, AVATAR_NAME_MIN_CHARS, AVATAR_NAME_MAX_CHARS)?;
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(NameError::Characters {
            field: FIELD,
            rule: "must start with a letter",
        });
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(NameError::Characters {
            field: FIELD,
            rule: "only ASCII letters, digits and `_`",
        });
    }
    Ok(())
}

pub fn avatar_name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Scene names: 1 to 64 ASCII letters, digits, `_`, `-`, `.` or `/`.
pub fn check_scene_name(name: &str) -> Result<(), NameError> {
    const FIELD: &str = "scene name";
    check_text(FIELD, name, 1, SCENE_NAME_MAX_CHARS)?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
    {
        return Err(NameError::Characters {
            field: FIELD,
            rule: "only ASCII letters, digits, `_`, `-`, `.` and `/`",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("  Bob@Example.COM ").unwrap(),
            "bob@example.com"
        );
        assert_eq!(normalize_email(""), Err(EmailError::Empty));
        assert_eq!(normalize_email("bob"), Err(EmailError::Shape));
        assert_eq!(normalize_email("@x.com"), Err(EmailError::Shape));
        assert_eq!(normalize_email("a@b@c.com"), Err(EmailError::Shape));
        assert_eq!(normalize_email("a b@c.com"), Err(EmailError::Characters));
        assert_eq!(normalize_email("bö@c.com"), Err(EmailError::Characters));
        assert_eq!(normalize_email("a@localhost"), Err(EmailError::Domain));
        assert_eq!(normalize_email("a@-x.com"), Err(EmailError::Domain));
        let long = format!("{}@x.com", "a".repeat(300));
        assert!(matches!(
            normalize_email(&long),
            Err(EmailError::TooLong { .. })
        ));
        let long_local = format!("{}@x.com", "a".repeat(65));
        assert!(matches!(
            normalize_email(&long_local),
            Err(EmailError::TooLong { .. })
        ));
    }

    #[test]
    fn password_policy() {
        assert!(check_password("correct horse", "a@b.com").is_ok());
        assert!(matches!(
            check_password("short", "a@b.com"),
            Err(PasswordError::TooShort { .. })
        ));
        assert!(matches!(
            check_password(&"x".repeat(129), "a@b.com"),
            Err(PasswordError::TooLong { .. })
        ));
        assert_eq!(
            check_password("abc\u{0}defgh", "a@b.com"),
            Err(PasswordError::Characters)
        );
        assert_eq!(
            check_password("Long@Mail.com", "long@mail.com"),
            Err(PasswordError::SameAsEmail)
        );
    }

    #[test]
    fn avatar_and_scene_names() {
        assert!(check_avatar_name("Aria_7").is_ok());
        assert!(check_avatar_name("ab").is_err());
        assert!(check_avatar_name("7up").is_err());
        assert!(check_avatar_name("has space").is_err());
        assert!(check_avatar_name(&"a".repeat(17)).is_err());
        assert_eq!(avatar_name_key("Aria_7"), "aria_7");
        assert!(check_scene_name("town/market-1").is_ok());
        assert!(check_scene_name("").is_err());
        assert!(check_scene_name("bad name").is_err());
        assert!(check_nickname(" padded").is_err());
        assert!(check_figure("").is_ok());
    }
}
