"""Services: business operations that take plain values and a Session, never commit, and raise
`DomainError`s. Views, CLI commands and jobs call them and own the transaction."""
