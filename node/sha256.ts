import { hash } from 'node:crypto';
import type { Sha256Hex } from '../protocol/canonical.js';

/** Node's native one-shot SHA-256: the digest every record hash on this side is computed with. */
export const sha256Hex: Sha256Hex = (text) => hash('sha256', text, 'hex');
