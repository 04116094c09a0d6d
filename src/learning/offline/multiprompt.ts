/**
 * The multiprompt corpus for offline tooling: the loader lives in
 * learning/corpus.ts (the learner retrains on it too); re-exported here for
 * the evaluation, train:default and the loop simulation.
 */
export * from '../corpus.js';
