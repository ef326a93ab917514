"""Identity: API clients per partner, the OAuth2 token endpoint and the signing keys its tokens are verified with."""
