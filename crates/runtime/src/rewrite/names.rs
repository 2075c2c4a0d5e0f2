//! Node names made unique before anything else reads them. ONNX lets a node have no name, or
//! share one; tract refuses two nodes of one name, and the fusions name their node after the
//! chain's first node (`{name}.group_norm`), so an unnamed graph would fuse into duplicates.

use std::collections::HashSet;

use tract_onnx::pb::GraphProto;

/// Names every unnamed node, and every node whose name an earlier node took, after its first
/// output (else its op type), with a numeric suffix where that is taken too. Returns how many
/// nodes were renamed; named graphs are left as they are.
pub fn name_nodes(graph: &mut GraphProto) -> usize {
    let mut taken: HashSet<String> = HashSet::new();
    let mut renamed = 0;
    for ix in 0..graph.node.len() {
        let node = &graph.node[ix];
        if !node.name.is_empty() && !taken.contains(&node.name) {
            taken.insert(node.name.clone());
            continue;
        }
        let base = node.output.iter().find(|o| !o.is_empty()).cloned().unwrap_or_else(|| node.op_type.clone());
        let name = (0..)
            .map(|k| if k == 0 { base.clone() } else { format!("{base}.{k}") })
            .find(|n| !taken.contains(n) && !graph.node.iter().any(|other| &other.name == n))
            .unwrap_or_default();
        taken.insert(name.clone());
        graph.node[ix].name = name;
        renamed += 1;
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::NodeProto;

    fn node(name: &str, output: &str) -> NodeProto {
        NodeProto { name: name.into(), op_type: "Relu".into(), output: vec![output.into()], ..Default::default() }
    }

    #[test]
    fn empty_and_repeated_names_become_unique() {
        let mut graph = GraphProto {
            node: vec![node("", "a"), node("n", "b"), node("n", "c"), node("", "n"), node("a", "d")],
            ..Default::default()
        };
        assert_eq!(name_nodes(&mut graph), 3);
        let names: Vec<&str> = graph.node.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a.1", "n", "c", "n.1", "a"]);
    }
}
