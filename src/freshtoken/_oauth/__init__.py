"""The wire: sending to token endpoints, client authentication, challenges, discovery,
ID tokens and DPoP."""
