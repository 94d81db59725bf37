"""Transports: SMTP in (aiosmtpd) and out (aiosmtplib). They do not know the store;
the runtime hands them a small context object that does."""
