-- A SMART grant's FHIR server (`aud`) and launch context, as a JSON object,
-- on the code and on the token family: the token response, introspection
-- and every refresh read it from there. NULL for any other grant.
ALTER TABLE authorization_codes ADD COLUMN smart TEXT;
ALTER TABLE token_families ADD COLUMN smart TEXT;
