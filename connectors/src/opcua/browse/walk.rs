//! The walk of `doppel opcua browse`: breadth-first along hierarchical references from
//! the root, within the depth and node limits, then the reads of what the proposal
//! needs: each variable's attributes, EURange and EngineeringUnits, each method's
//! UserExecutable and InputArguments.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, ByteString, DataValue,
    NodeClass, NodeClassMask, NodeId, ObjectId, ReadValueId, ReferenceDescription, ReferenceTypeId,
    StatusCode, TimestampsToReturn, UAString, Variant,
};

use super::BrowseOptions;
use crate::opcua::proposal::{Cut, SkipReason, Skipped, snake_case, strip_parent};

/// Nodes browsed in one Browse request.
const BROWSE_BATCH: usize = 100;
/// Attributes read in one Read request.
const READ_BATCH: usize = 500;
/// Browse names of the standard properties the proposal reads.
const EU_RANGE: &str = "EURange";
const ENGINEERING_UNITS: &str = "EngineeringUnits";
pub(super) const INPUT_ARGUMENTS: &str = "InputArguments";
/// The attributes read of every variable, in this order.
const VARIABLE_ATTRIBUTES: [AttributeId; 5] = [
    AttributeId::DataType,
    AttributeId::ValueRank,
    AttributeId::AccessLevel,
    AttributeId::UserAccessLevel,
    AttributeId::Value,
];

/// A node met on the walk.
#[derive(Debug, Clone)]
pub(super) struct Met {
    pub(super) node: NodeId,
    class: NodeClass,
    pub(super) browse_name: String,
    /// Browse names from below the root down to this node.
    names: Vec<String>,
    /// Name segments from below the root down to this node, in snake case.
    segments: Vec<String>,
    /// The node it was found below.
    pub(super) parent: NodeId,
    /// Levels below the root.
    depth: usize,
}

impl Met {
    /// Browse names from the root, joined with `/`.
    fn path(&self) -> String {
        if self.names.is_empty() {
            self.browse_name.clone()
        } else {
            self.names.join("/")
        }
    }

    /// The name proposed for it: its segments joined with `_`.
    pub(super) fn name(&self) -> String {
        let name = self
            .segments
            .iter()
            .filter(|segment| !segment.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("_");
        if name.is_empty() {
            "value".to_string()
        } else {
            name
        }
    }

    pub(super) fn skipped(&self, reason: SkipReason) -> Skipped {
        Skipped {
            node: self.node.to_string(),
            path: self.path(),
            reason,
        }
    }
}

/// What the walk found.
pub(super) struct Survey {
    pub(super) root: Met,
    /// Nodes visited, the root included.
    pub(super) visited: usize,
    pub(super) variables: Vec<Met>,
    pub(super) methods: Vec<Met>,
    /// Properties the proposal reads, by the node they describe: browse name and node.
    properties: HashMap<NodeId, Vec<(String, NodeId)>>,
    pub(super) unused_properties: BTreeMap<String, usize>,
    pub(super) skipped: Vec<Skipped>,
    pub(super) cut: Cut,
}

/// What was read of the variables and methods, in the survey's order.
pub(super) struct Facts {
    pub(super) variables: Vec<VariableFacts>,
    pub(super) methods: Vec<MethodFacts>,
}

/// What was read of one variable.
#[derive(Debug, Clone, Default)]
pub(super) struct VariableFacts {
    pub(super) data_type: DataValue,
    pub(super) value_rank: DataValue,
    pub(super) access_level: DataValue,
    pub(super) user_access_level: DataValue,
    pub(super) value: DataValue,
    pub(super) eu_range: Option<DataValue>,
    pub(super) engineering_units: Option<DataValue>,
}

/// What was read of one method.
#[derive(Debug, Clone, Default)]
pub(super) struct MethodFacts {
    pub(super) user_executable: DataValue,
    pub(super) input_arguments: Option<DataValue>,
}

/// Walks from `root` and reads what the proposal needs.
pub(super) async fn survey(
    session: &Session,
    root: &NodeId,
    options: &BrowseOptions,
) -> Result<(Survey, Facts), String> {
    let root = root_met(session, root).await?;
    let survey = walk(session, root, options).await?;
    let facts = read_facts(session, &survey).await?;
    Ok((survey, facts))
}

/// The root, which must be an object (a folder is one).
async fn root_met(session: &Session, root: &NodeId) -> Result<Met, String> {
    let values = read_all(
        session,
        &[
            read_of(root, AttributeId::BrowseName),
            read_of(root, AttributeId::NodeClass),
        ],
    )
    .await?;
    let browse_name = match &values[0].value {
        Some(Variant::QualifiedName(name)) => text_of(&name.name),
        _ => {
            return Err(format!(
                "the root `{root}` is not a node of the server ({})",
                status_text(&values[0])
            ));
        }
    };
    if !matches!(&values[1].value, Some(Variant::Int32(class)) if *class == NodeClass::Object as i32)
    {
        return Err(format!(
            "the root `{root}` ({browse_name}) is not an object: give the object or folder that holds the variables"
        ));
    }
    Ok(Met {
        node: root.clone(),
        class: NodeClass::Object,
        browse_name,
        names: Vec::new(),
        segments: Vec::new(),
        parent: root.clone(),
        depth: 0,
    })
}

/// Breadth-first from `root`, within the options' bounds.
async fn walk(session: &Session, root: Met, options: &BrowseOptions) -> Result<Survey, String> {
    let mut survey = Survey {
        root: root.clone(),
        visited: 1,
        variables: Vec::new(),
        methods: Vec::new(),
        properties: HashMap::new(),
        unused_properties: BTreeMap::new(),
        skipped: Vec::new(),
        cut: Cut::new(options.max_depth, options.max_nodes),
    };
    let mut visited: HashSet<NodeId> = HashSet::from([root.node.clone()]);
    let mut beyond_depth: HashSet<NodeId> = HashSet::new();
    let mut queue = VecDeque::from([root]);
    while !queue.is_empty() {
        let batch: Vec<Met> = queue.drain(..queue.len().min(BROWSE_BATCH)).collect();
        let listings = list_references(session, &batch, options.max_nodes, &mut survey.cut).await?;
        for (parent, listing) in batch.iter().zip(listings) {
            let references = match listing {
                Ok(references) => references,
                Err(status) => {
                    survey.skipped.push(parent.skipped(SkipReason::Unbrowsable {
                        status: status.to_string(),
                    }));
                    continue;
                }
            };
            for reference in references {
                let step = Step {
                    visited: &mut visited,
                    beyond_depth: &mut beyond_depth,
                    options,
                };
                if let Some(child) = survey.meet(parent, reference, step) {
                    queue.push_back(child);
                }
            }
        }
    }
    survey.visited = visited.len();
    Ok(survey)
}

/// The walk's bookkeeping, lent to [`Survey::meet`].
struct Step<'a> {
    visited: &'a mut HashSet<NodeId>,
    beyond_depth: &'a mut HashSet<NodeId>,
    options: &'a BrowseOptions,
}

impl Survey {
    /// Takes in one reference found below `parent`; returns the node to browse next.
    fn meet(
        &mut self,
        parent: &Met,
        reference: ReferenceDescription,
        step: Step<'_>,
    ) -> Option<Met> {
        let browse_name = text_of(&reference.browse_name.name);
        let mut names = parent.names.clone();
        names.push(browse_name.clone());
        let skipped = |node: &NodeId, reason| Skipped {
            node: node.to_string(),
            path: names.join("/"),
            reason,
        };
        if reference.node_id.server_index != 0 {
            self.skipped
                .push(skipped(&reference.node_id.node_id, SkipReason::OtherServer));
            return None;
        }
        let node = reference.node_id.node_id;
        if step.visited.contains(&node) {
            return None;
        }
        if node == ObjectId::Server {
            step.visited.insert(node.clone());
            self.skipped.push(skipped(&node, SkipReason::ServerObject));
            return None;
        }
        let is_property = reference.reference_type_id == ReferenceTypeId::HasProperty;
        if is_property && matches!(parent.class, NodeClass::Variable | NodeClass::Method) {
            let used = if parent.class == NodeClass::Method {
                browse_name == INPUT_ARGUMENTS
            } else {
                browse_name == EU_RANGE || browse_name == ENGINEERING_UNITS
            };
            if !used {
                *self.unused_properties.entry(browse_name).or_default() += 1;
                return None;
            }
            if step.visited.len() >= step.options.max_nodes {
                self.cut.beyond_nodes += 1;
                return None;
            }
            step.visited.insert(node.clone());
            self.properties
                .entry(parent.node.clone())
                .or_default()
                .push((browse_name, node));
            return None;
        }
        if parent.class == NodeClass::Method {
            self.skipped.push(skipped(&node, SkipReason::UnderMethod));
            return None;
        }
        let depth = parent.depth + 1;
        if depth > step.options.max_depth {
            if step.beyond_depth.insert(node.clone()) {
                self.cut.note_beyond_depth(node.to_string());
            }
            return None;
        }
        if step.visited.len() >= step.options.max_nodes {
            self.cut.beyond_nodes += 1;
            return None;
        }
        step.visited.insert(node.clone());
        let mut segments = parent.segments.clone();
        segments.push(snake_case(strip_parent(&browse_name, &parent.browse_name)));
        let met = Met {
            node,
            class: reference.node_class,
            browse_name,
            names,
            segments,
            parent: parent.node.clone(),
            depth,
        };
        match met.class {
            NodeClass::Variable => self.variables.push(met.clone()),
            NodeClass::Method => self.methods.push(met.clone()),
            _ => {}
        }
        Some(met)
    }
}

/// The references of one node, or the status browsing it failed with.
type Listing = Result<Vec<ReferenceDescription>, StatusCode>;

/// The hierarchical references of `nodes`, forward, to objects, variables and
/// methods, following continuation points. Once a batch lists more references than
/// `limit` the rest would be cut anyway: its continuation points are released.
async fn list_references(
    session: &Session,
    nodes: &[Met],
    limit: usize,
    cut: &mut Cut,
) -> Result<Vec<Listing>, String> {
    let descriptions: Vec<BrowseDescription> = nodes
        .iter()
        .map(|met| BrowseDescription {
            node_id: met.node.clone(),
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            include_subtypes: true,
            node_class_mask: (NodeClassMask::OBJECT
                | NodeClassMask::VARIABLE
                | NodeClassMask::METHOD)
                .bits(),
            result_mask: BrowseResultMask::All as u32,
        })
        .collect();
    let results = session
        .browse(&descriptions, 0, None)
        .await
        .map_err(|error| format!("browsing failed: {error}"))?;
    if results.len() != nodes.len() {
        return Err(format!(
            "the server answered {} of {} nodes browsed",
            results.len(),
            nodes.len()
        ));
    }
    let mut listings: Vec<Listing> = Vec::with_capacity(nodes.len());
    let mut pending: Vec<(usize, ByteString)> = Vec::new();
    for (index, result) in results.into_iter().enumerate() {
        if result.status_code.is_bad() {
            listings.push(Err(result.status_code));
            continue;
        }
        listings.push(Ok(result.references.unwrap_or_default()));
        if !result.continuation_point.is_null_or_empty() {
            pending.push((index, result.continuation_point));
        }
    }
    let mut listed: usize = listings
        .iter()
        .map(|listing| listing.as_ref().map_or(0, Vec::len))
        .sum();
    while !pending.is_empty() {
        let points: Vec<ByteString> = pending.iter().map(|(_, point)| point.clone()).collect();
        if listed > limit {
            cut.unfinished_listings += pending.len();
            // Releasing is a courtesy to the server; its answer changes nothing.
            let _ = session.browse_next(true, &points).await;
            break;
        }
        let results = session
            .browse_next(false, &points)
            .await
            .map_err(|error| format!("browsing on failed: {error}"))?;
        if results.len() != points.len() {
            return Err(format!(
                "the server answered {} of {} continuation points",
                results.len(),
                points.len()
            ));
        }
        let mut next = Vec::new();
        let mut progress = 0;
        for ((index, _), result) in pending.iter().zip(results) {
            if result.status_code.is_bad() {
                listings[*index] = Err(result.status_code);
                continue;
            }
            let references = result.references.unwrap_or_default();
            progress += references.len();
            if let Ok(listing) = &mut listings[*index] {
                listing.extend(references);
            }
            if !result.continuation_point.is_null_or_empty() {
                next.push((*index, result.continuation_point));
            }
        }
        listed += progress;
        if progress == 0 && !next.is_empty() {
            // Continuation points that list nothing would never end.
            cut.unfinished_listings += next.len();
            let points: Vec<ByteString> = next.into_iter().map(|(_, point)| point).collect();
            let _ = session.browse_next(true, &points).await;
            break;
        }
        pending = next;
    }
    Ok(listings)
}

/// Reads every variable's attributes, its EURange and EngineeringUnits, and every
/// method's UserExecutable and InputArguments.
async fn read_facts(session: &Session, survey: &Survey) -> Result<Facts, String> {
    let mut reads: Vec<ReadValueId> = Vec::new();
    for variable in &survey.variables {
        for attribute in VARIABLE_ATTRIBUTES {
            reads.push(read_of(&variable.node, attribute));
        }
    }
    for method in &survey.methods {
        reads.push(read_of(&method.node, AttributeId::UserExecutable));
    }
    let mut property_reads: HashMap<NodeId, usize> = HashMap::new();
    for properties in survey.properties.values() {
        for (_, node) in properties {
            property_reads.entry(node.clone()).or_insert_with(|| {
                reads.push(read_of(node, AttributeId::Value));
                reads.len() - 1
            });
        }
    }
    let values = read_all(session, &reads).await?;
    let property = |owner: &NodeId, name: &str| -> Option<DataValue> {
        let (_, node) = survey
            .properties
            .get(owner)?
            .iter()
            .find(|(property, _)| property == name)?;
        property_reads.get(node).map(|&at| values[at].clone())
    };
    let variables = survey
        .variables
        .iter()
        .enumerate()
        .map(|(index, variable)| {
            let at = |offset: usize| values[index * VARIABLE_ATTRIBUTES.len() + offset].clone();
            VariableFacts {
                data_type: at(0),
                value_rank: at(1),
                access_level: at(2),
                user_access_level: at(3),
                value: at(4),
                eu_range: property(&variable.node, EU_RANGE),
                engineering_units: property(&variable.node, ENGINEERING_UNITS),
            }
        })
        .collect();
    let first_method = survey.variables.len() * VARIABLE_ATTRIBUTES.len();
    let methods = survey
        .methods
        .iter()
        .enumerate()
        .map(|(index, method)| MethodFacts {
            user_executable: values[first_method + index].clone(),
            input_arguments: property(&method.node, INPUT_ARGUMENTS),
        })
        .collect();
    Ok(Facts { variables, methods })
}

/// Reads `reads` in batches; one value per read, in order.
async fn read_all(session: &Session, reads: &[ReadValueId]) -> Result<Vec<DataValue>, String> {
    let mut values = Vec::with_capacity(reads.len());
    for chunk in reads.chunks(READ_BATCH) {
        let answered = session
            .read(chunk, TimestampsToReturn::Neither, 0.0)
            .await
            .map_err(|error| format!("reading attributes failed: {error}"))?;
        if answered.len() != chunk.len() {
            return Err(format!(
                "the server answered {} of {} attributes read",
                answered.len(),
                chunk.len()
            ));
        }
        values.extend(answered);
    }
    Ok(values)
}

fn read_of(node: &NodeId, attribute: AttributeId) -> ReadValueId {
    ReadValueId {
        node_id: node.clone(),
        attribute_id: attribute as u32,
        ..Default::default()
    }
}

/// The status of a read, as text.
pub(super) fn status_text(value: &DataValue) -> String {
    value
        .status
        .map_or_else(|| "no value".to_string(), |status| status.to_string())
}

/// An OPC UA string's text; empty when null.
pub(super) fn text_of(text: &UAString) -> String {
    let text: &str = text.as_ref();
    text.to_string()
}
