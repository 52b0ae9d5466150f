package keyledger

import (
	"context"
	"errors"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
)

// SignupWithVerification is Signup for hosts that confirm email addresses
// (the account service needs a Mailer). It creates the account and opens
// its ledger without the signup grant, and mails a verification token;
// VerifyEmail pays the grant. If the email is already registered it mails
// the owner instead (MailAlreadyRegistered) and returns a zero Account and
// no error, so that the caller answers both cases alike and the answer
// reveals nothing. Validation errors (ErrInvalidEmail, ErrInvalidPassword,
// …) are returned as by Create; so is ErrNoMailer.
func (kl *KeyLedger) SignupWithVerification(ctx context.Context, p account.CreateParams) (account.Account, error) {
	a, err := kl.Accounts.Create(ctx, p)
	if errors.Is(err, account.ErrEmailTaken) {
		return account.Account{}, kl.Accounts.NotifyAlreadyRegistered(ctx, p.Email)
	}
	if err != nil {
		return account.Account{}, err
	}
	if _, err := kl.Credits.Open(ctx, a.ID, kl.policyFor(a, credits.Policy{})); err != nil && !errors.Is(err, credits.ErrAlreadyOpen) {
		return a, err
	}
	return a, kl.Accounts.SendVerification(ctx, a.ID)
}

// VerifyEmail consumes an email verification token and pays the account's
// signup grant once (EnsureLedger; none if the address belonged to a
// closed account). It returns account.ErrTokenInvalid or account.ErrClosed.
// It is kl.Accounts.VerifyEmail, whose hook (accountChanged) pays the
// grant, kept here for hosts written against it.
func (kl *KeyLedger) VerifyEmail(ctx context.Context, tok account.Secret) (account.Account, error) {
	return kl.Accounts.VerifyEmail(ctx, tok)
}

// CloseAccount closes an account for good: its sessions and tokens are
// revoked and its personal fields scrubbed (account.Service.Close), and
// every API key is revoked, so in-flight requests are cancelled and
// nothing more can be charged to it. The ledger and usage stay for the
// books. Closing twice is not an error; it returns account.ErrNotFound.
// It is kl.Accounts.Close, whose hook (accountChanged) revokes the keys,
// kept here for hosts written against it.
func (kl *KeyLedger) CloseAccount(ctx context.Context, accountID string) (account.Account, error) {
	return kl.Accounts.Close(ctx, accountID)
}

// revokeKeys revokes every key of an account (after its closure).
func (kl *KeyLedger) revokeKeys(ctx context.Context, accountID string) error {
	cursor := ""
	for {
		pg, err := kl.Keys.List(ctx, accountID, apikey.ListParams{Cursor: cursor, Limit: 500})
		if err != nil {
			return err
		}
		for _, k := range pg.Keys {
			if k.Status == apikey.StatusRevoked {
				continue
			}
			if _, err := kl.Keys.Revoke(ctx, accountID, k.ID); err != nil && !errors.Is(err, apikey.ErrNotFound) {
				return err
			}
		}
		if pg.NextCursor == "" {
			return nil
		}
		cursor = pg.NextCursor
	}
}
