#!/usr/bin/env node
// The `tocfs` command. The TypeScript sources are compiled to dist/ by `npm run build` (npm test builds too).
import '../dist/src/cli/main.js';
