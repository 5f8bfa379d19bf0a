// Inline SVG plots (still to come in this build).
export {};
