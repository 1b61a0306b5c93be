"""Teacher and student loading: local dirs, hub ids, CTranslate2 import."""
