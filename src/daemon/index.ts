// Wiring: config → logger → caches → registry → store → FUSE.
export { startDaemon, createLogger, storageConfLine, namespaceJournalPath, type Daemon, type InheritedConnection } from './daemon.js';
export { supervise, serveHandoff, type ServeHandoff, type ServerMessage, type SupervisorOptions } from './supervisor.js';
export { loadConfig, defaultConfig, parseSize, cacheDirOf, ConfigError, DEFAULT_CONFIG_FILE, type Config } from './config.js';
export { callControl, applyCredentials, type DaemonStatus } from './control.js';
export { humanLine } from './log.js';
