-- SMART: who a person is on the FHIR server (`fhirUser`, a resource
-- reference such as Practitioner/123, made absolute with the FHIR base at
-- issue), and the patients a person may act for: the standalone launch's
-- picker lists them (their own record, a child's, a parent's).
ALTER TABLE users ADD COLUMN fhir_user TEXT;

CREATE TABLE patient_links (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    patient_id  TEXT NOT NULL,
    display     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, patient_id)
);
