//! omnode: the node agent library.
