-- One database per service (docker-compose only; `make infra-up` creates them itself).
CREATE DATABASE status_registry;
CREATE DATABASE orders;
CREATE DATABASE campaigns;
CREATE DATABASE notifier;
CREATE DATABASE console;
CREATE DATABASE identity;
CREATE DATABASE webhooks;
