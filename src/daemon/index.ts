// Wiring: config → logger → caches → registry → store → FUSE.
export { startDaemon, createLogger, storageConfLine, type Daemon } from './daemon.js';
export { loadConfig, defaultConfig, parseSize, cacheDirOf, ConfigError, DEFAULT_CONFIG_FILE, type Config } from './config.js';
export { callControl, applyCredentials, type DaemonStatus } from './control.js';
export { humanLine } from './log.js';
