//! Accounts: register, verify a password, record logins, change email or password,
//! lock / unlock, soft delete.
//!
//! Password work (argon2id) runs outside any transaction, on the calling thread, under the
//! store's [`crate::PasswordHasher`] cap; call these from a blocking thread, never from an
//! async task directly.

use redb::{ReadableDatabase, ReadableTable, Table};

use crate::error::*;
use crate::schema::{self, *};
use crate::store::{Store, is_deleted, next_id, now_ms};
use crate::types::{Account, AccountId, AccountStatus, LoginRecord};
use crate::validate;

/// A password no account has, hashed once, for unknown-email verification.
const DUMMY_PASSWORD: &str = "tessera-dummy-password";

pub(crate) fn get_account(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: AccountId,
) -> Result<Option<Account>, StoreError> {
    table
        .get(id)?
        .map(|g| schema::decode_account(g.value()))
        .transpose()
}

pub(crate) fn put_account(
    table: &mut Table<u64, &[u8]>,
    account: &Account,
) -> Result<(), StoreError> {
    table.insert(account.id, schema::encode(account)?.as_slice())?;
    Ok(())
}

impl Store {
    /// Registers an account. The email is trimmed and lower-cased; a second account with the
    /// same email, in any letter case, is [`RegisterError::DuplicateEmail`]. Without a
    /// nickname, the email's local part is used. Blocks for one password hash.
    pub fn register(
        &self,
        email: &str,
        password: &str,
        nickname: Option<&str>,
    ) -> Result<AccountId, RegisterError> {
        let email = validate::normalize_email(email)?;
        validate::check_password(password, &email)?;
        let nickname = match nickname {
            Some(n) => n.to_string(),
            None => email
                .split('@')
                .next()
                .unwrap_or_default()
                .chars()
                .take(validate::NICKNAME_MAX_CHARS)
                .collect(),
        };
        validate::check_nickname(&nickname)?;
        // Refuse a known duplicate before paying for a hash; the write below decides races.
        if self.account_id_by_email(&email)?.is_some() {
            return Err(RegisterError::DuplicateEmail { email });
        }
        let password_hash = self.hasher.hash(password)?;

        let txn = self.write_txn()?;
        let id = {
            let mut emails = txn.open_table(EMAIL_INDEX)?;
            if emails.get(email.as_str())?.is_some() {
                return Err(RegisterError::DuplicateEmail { email });
            }
            let mut meta = txn.open_table(META)?;
            let id = next_id(&mut meta, META_NEXT_ACCOUNT, FIRST_ACCOUNT_ID)?;
            let account = Account {
                id,
                email: email.clone(),
                password_hash,
                nickname,
                status: AccountStatus::Open,
                created_ms: now_ms(),
                last_login: None,
                history: Vec::new(),
            };
            put_account(&mut txn.open_table(ACCOUNTS)?, &account)?;
            emails.insert(email.as_str(), id)?;
            id
        };
        txn.commit()?;
        Ok(id)
    }

    /// The account with this id.
    pub fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let read = self.db.begin_read()?;
        get_account(&read.open_table(ACCOUNTS)?, id)
    }

    fn account_id_by_email(&self, normalized: &str) -> Result<Option<AccountId>, StoreError> {
        let read = self.db.begin_read()?;
        Ok(read
            .open_table(EMAIL_INDEX)?
            .get(normalized)?
            .map(|g| g.value()))
    }

    /// The account with this email (normalised first).
    pub fn account_by_email(&self, email: &str) -> Result<Account, AccountUpdateError> {
        let email = validate::normalize_email(email)?;
        let read = self.db.begin_read()?;
        let id = read
            .open_table(EMAIL_INDEX)?
            .get(email.as_str())?
            .map(|g| g.value())
            .ok_or(AccountUpdateError::UnknownEmail)?;
        get_account(&read.open_table(ACCOUNTS)?, id)?.ok_or(AccountUpdateError::UnknownAccount(id))
    }

    /// Checks an email and password. The order of refusals is: malformed input, unknown
    /// email, wrong password, then locked or deleted — so an account's status is only
    /// revealed to someone who knows its password. An unknown email costs one hash too, so
    /// it cannot be told from a wrong password by timing. Blocks for one password hash.
    pub fn verify_password(&self, email: &str, password: &str) -> Result<Account, LoginError> {
        let email = validate::normalize_email(email)?;
        validate::check_password_length(password)?;
        let account = {
            let read = self.db.begin_read()?;
            let id = read
                .open_table(EMAIL_INDEX)?
                .get(email.as_str())?
                .map(|g| g.value());
            match id {
                Some(id) => get_account(&read.open_table(ACCOUNTS)?, id)?,
                None => None,
            }
        };
        let Some(account) = account else {
            let dummy = match self.dummy_hash.get() {
                Some(h) => h.clone(),
                None => {
                    let h = self.hasher.hash(DUMMY_PASSWORD)?;
                    self.dummy_hash.get_or_init(|| h).clone()
                }
            };
            let _ = self.hasher.verify(password, &dummy)?;
            return Err(LoginError::UnknownEmail);
        };
        if !self.hasher.verify(password, &account.password_hash)? {
            return Err(LoginError::WrongPassword);
        }
        match account.status {
            AccountStatus::Open => Ok(account),
            AccountStatus::Locked => Err(LoginError::Locked),
            AccountStatus::Deleted => Err(LoginError::Deleted),
        }
    }

    /// [`Store::verify_password`], then [`Store::record_login`] from `address`.
    pub fn login(&self, email: &str, password: &str, address: &str) -> Result<Account, LoginError> {
        validate::check_address(address)?;
        let account = self.verify_password(email, password)?;
        match self.record_login(account.id, address) {
            Ok(account) => Ok(account),
            Err(AccountUpdateError::Store(e)) => Err(LoginError::Store(e)),
            Err(AccountUpdateError::InvalidAddress(e)) => Err(LoginError::InvalidAddress(e)),
            Err(AccountUpdateError::Deleted(_)) => Err(LoginError::Deleted),
            // Deleted between the check and the record: as good as unknown.
            Err(_) => Err(LoginError::UnknownEmail),
        }
    }

    fn update_account(
        &self,
        id: AccountId,
        f: impl FnOnce(&mut Account) -> Result<(), AccountUpdateError>,
    ) -> Result<Account, AccountUpdateError> {
        let txn = self.write_txn()?;
        let account = {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            let mut account =
                get_account(&accounts, id)?.ok_or(AccountUpdateError::UnknownAccount(id))?;
            f(&mut account)?;
            put_account(&mut accounts, &account)?;
            account
        };
        txn.commit()?;
        Ok(account)
    }

    /// Records a login now from `address`: sets the last login and appends to the bounded
    /// history (the oldest entries fall off).
    pub fn record_login(
        &self,
        id: AccountId,
        address: &str,
    ) -> Result<Account, AccountUpdateError> {
        validate::check_address(address)?;
        let login = LoginRecord {
            time_ms: now_ms(),
            address: address.to_string(),
        };
        self.update_account(id, |a| {
            if is_deleted(a.status) {
                return Err(AccountUpdateError::Deleted(id));
            }
            a.history.push(login.clone());
            let excess = a.history.len().saturating_sub(LOGIN_HISTORY_LEN);
            a.history.drain(..excess);
            a.last_login = Some(login);
            Ok(())
        })
    }

    /// Locks an account: logins are refused with [`LoginError::Locked`].
    pub fn lock_account(&self, id: AccountId) -> Result<Account, AccountUpdateError> {
        self.update_account(id, |a| {
            if is_deleted(a.status) {
                return Err(AccountUpdateError::Deleted(id));
            }
            a.status = AccountStatus::Locked;
            Ok(())
        })
    }

    /// Unlocks a locked account. A deleted account stays deleted.
    pub fn unlock_account(&self, id: AccountId) -> Result<Account, AccountUpdateError> {
        self.update_account(id, |a| {
            if is_deleted(a.status) {
                return Err(AccountUpdateError::Deleted(id));
            }
            a.status = AccountStatus::Open;
            Ok(())
        })
    }

    /// Soft-deletes an account: the record and its email stay (the email cannot be
    /// registered again), logins are refused with [`LoginError::Deleted`].
    pub fn delete_account(&self, id: AccountId) -> Result<Account, AccountUpdateError> {
        self.update_account(id, |a| {
            a.status = AccountStatus::Deleted;
            Ok(())
        })
    }

    /// Changes an account's email; the old one becomes free.
    pub fn change_email(
        &self,
        id: AccountId,
        new_email: &str,
    ) -> Result<Account, ChangeEmailError> {
        let email = validate::normalize_email(new_email)?;
        let txn = self.write_txn()?;
        let account = {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            let mut emails = txn.open_table(EMAIL_INDEX)?;
            let mut account =
                get_account(&accounts, id)?.ok_or(ChangeEmailError::UnknownAccount(id))?;
            if is_deleted(account.status) {
                return Err(ChangeEmailError::Deleted(id));
            }
            match emails.get(email.as_str())?.map(|g| g.value()) {
                Some(owner) if owner == id => return Ok(account),
                Some(_) => return Err(ChangeEmailError::DuplicateEmail { email }),
                None => {}
            }
            emails.remove(account.email.as_str())?;
            emails.insert(email.as_str(), id)?;
            account.email = email;
            put_account(&mut accounts, &account)?;
            account
        };
        txn.commit()?;
        Ok(account)
    }

    /// Changes an account's password after checking the current one. Blocks for two hashes.
    pub fn change_password(
        &self,
        id: AccountId,
        current: &str,
        new: &str,
    ) -> Result<(), ChangePasswordError> {
        let account = self
            .account(id)?
            .ok_or(ChangePasswordError::UnknownAccount(id))?;
        if is_deleted(account.status) {
            return Err(ChangePasswordError::Deleted(id));
        }
        validate::check_password(new, &account.email)?;
        if validate::check_password_length(current).is_err()
            || !self.hasher.verify(current, &account.password_hash)?
        {
            return Err(ChangePasswordError::WrongPassword);
        }
        let password_hash = self.hasher.hash(new)?;
        let txn = self.write_txn()?;
        {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            let mut account =
                get_account(&accounts, id)?.ok_or(ChangePasswordError::UnknownAccount(id))?;
            if is_deleted(account.status) {
                return Err(ChangePasswordError::Deleted(id));
            }
            account.password_hash = password_hash;
            put_account(&mut accounts, &account)?;
        }
        txn.commit()?;
        Ok(())
    }
}
