"""Logins: the authorization code request, the browser and device flows, the loopback
listener and the token request a login ends with."""
